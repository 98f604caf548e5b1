"""The safetensors store: a tensor and its mapping written by ingest, read by safetensors itself,
searched exactly (as LanceDB ranks), refused with a clear error when the files are bad, rewritten
atomically, and served read-only by several openers, the CLI and the HTTP service."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from _pipeline_support import TOPICS, FakeEmbedder, minilm_folder, write_big_corpus, write_corpus
from _server_support import CORPUS, build_store, client_for
from _server_support import FakeEmbedder as ServerFakeEmbedder
from _servers_support import check_contract, check_side_table, check_write_contract
from _store_support import make_records, unit_rows
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError, StoreLockedError
from vectorstream.pipeline import ingest
from vectorstream.stores import _st_memory, open_store
from vectorstream.stores.safetensors import SafetensorsStore
from vectorstream.types import Embedding

HERE = Path(__file__).parent
DIM = 16


def _mapping(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="numpy") as fh:
        return dict(fh.metadata() or {})


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader gives up on a pair of two generations after 2 looks instead of 20."""
    monkeypatch.setattr(_st_memory, "ATTEMPTS", 2)


# -- the store contract --------------------------------------------------------------------------


def test_the_store_contract_and_side_tables(tmp_path: Path) -> None:
    store = open_store(f"safetensors:{tmp_path}", "docs", dim=DIM)
    assert isinstance(store, SafetensorsStore)
    left = check_contract(store, dim=DIM)
    check_side_table(store)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "docs.jsonl",
        "docs.safetensors",
        "docs.safetensors.vs-manifest.sqlite",
    ]
    reader = open_store(f"safetensors:{tmp_path}", "docs", mode="r")
    try:
        assert reader.ids() == {r.id for r in left} and reader.count() == len(left)
        back = {r.id: r for r in reader.records()}
        assert set(back) == {r.id for r in left}
        for r in left:  # the contract changed the texts of its first five records
            assert back[r.id].text in (r.text, "changed") and back[r.id].metadata == r.metadata
            np.testing.assert_array_equal(back[r.id].embedding.as_dense(), r.embedding.as_dense())
    finally:
        reader.close()

    sink = open_store(f"safetensors:{tmp_path / 'one.safetensors'}", "ignored", dim=DIM)
    check_write_contract(sink, dim=DIM)
    sink.close()
    assert (tmp_path / "one.safetensors").is_file() and (tmp_path / "one.jsonl").is_file()


def test_zero_vectors_are_refused_and_the_rest_written(tmp_path: Path) -> None:
    records = make_records(unit_rows(5, DIM))
    zero = replace(records[0], id="zero", embedding=Embedding(dense=np.zeros(DIM, np.float32)))
    with open_store(f"safetensors:{tmp_path}", "docs", dim=DIM) as store:
        with pytest.raises(RecordRejectedError) as info:
            store.upsert([*records, zero])
        assert set(info.value.rejected) == {"zero"}
        assert store.count() == 5


# -- ingest: the file pair, read by safetensors, ranked as LanceDB ranks ---------------------------


class SmoothEmbedder(FakeEmbedder):
    """The pipeline tests' fake with a Gaussian direction per token instead of a ±1 bucket: the
    bucket sums make many chunks score exactly alike, and ties may come back in any order."""

    def embed_tokenized(self, encodings: Any) -> np.ndarray:
        out = np.zeros((len(encodings), self.dim), dtype=np.float64)
        for i, enc in enumerate(encodings):
            for tid in enc.ids[1:-1]:
                out[i] += np.random.default_rng(tid).standard_normal(self.dim)
        out[:, 0] += 1e-3  # an empty text still has a direction
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _unique_corpus(root: Path, files: int = 8, paragraphs: int = 12) -> None:
    """Paragraphs of random words: no two chunks alike, so no two score exactly alike."""
    rng = np.random.default_rng(11)
    root.mkdir(parents=True)
    topics = sorted(TOPICS.items())
    for f in range(files):
        topic, sentence = topics[f % len(topics)]
        paras = [
            sentence + " " + " ".join(f"w{n}" for n in rng.integers(0, 400, 40))
            for _ in range(paragraphs)
        ]
        (root / f"doc{f:02d}.md").write_text(f"# {topic} {f}\n\n" + "\n\n".join(paras) + "\n")


def _queries(n: int) -> list[str]:
    rng = np.random.default_rng(12)
    topics = sorted(TOPICS)
    return [
        f"{topics[i % len(topics)]} " + " ".join(f"w{x}" for x in rng.integers(0, 400, 3))
        for i in range(n)
    ]


def test_ingest_writes_a_pair_safetensors_reads_and_search_ranks_like_lancedb(
    tmp_path: Path,
) -> None:
    _unique_corpus(tmp_path / "corpus")
    emb = SmoothEmbedder(dim=64)
    uri = f"safetensors:{tmp_path / 'out'}"
    lance = f"lancedb://{tmp_path / 'lance'}"
    for target in (uri, lance):
        report = ingest(
            [tmp_path / "corpus"], store=target, collection="docs", model=emb,
            workers=0, chunk_tokens=64, overlap=0,
        )  # fmt: skip
        assert report.ok, report.errors
    tensor, mapping = tmp_path / "out" / "docs.safetensors", tmp_path / "out" / "docs.jsonl"
    matrix = load_file(str(tensor))["embeddings"]
    rows = _mapping(mapping)
    assert matrix.dtype == np.float32 and matrix.shape == (report.vectors, 64) == (len(rows), 64)
    assert [(r["source"], r["chunk_index"]) for r in rows] == sorted(
        (r["source"], r["chunk_index"]) for r in rows
    )  # a stable order: by source, then chunk
    assert set(rows[0]) >= {"id", "text", "source", "start", "end", "chunk_index", "metadata"}
    meta = _metadata(tensor)
    assert meta["vectorstream.rows"] == str(len(rows)) and meta["vectorstream.generation"] == "1"

    store = open_store(uri, "docs", mode="r")
    other = open_store(lance, "docs", mode="r")
    try:
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        for text in _queries(50):
            q = emb.embed([text])[0]
            hits = store.search(q, k=10)
            # The vectors safetensors reads are the ones the store ranks by.
            scores = unit @ (q / np.linalg.norm(q))
            order = np.argsort(-scores, kind="stable")[:10]
            np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)
            assert [h.id for h in hits] == [rows[i]["id"] for i in order], text
            assert [h.id for h in hits] == [h.id for h in other.search(q, k=10)], text
        hit = store.search(emb.embed(["cooking bread"])[0], k=1)[0]
        assert hit.text == next(r["text"] for r in rows if r["id"] == hit.id)
    finally:
        store.close()
        other.close()

    # Unchanged files are skipped and the pair is left as it is; a changed one is replaced.
    before = tensor.stat().st_mtime_ns
    again = ingest([tmp_path / "corpus"], store=uri, collection="docs", model=emb, workers=0,
                   chunk_tokens=64, overlap=0)  # fmt: skip
    assert again.files_skipped == 8 and tensor.stat().st_mtime_ns == before
    changed = sorted((tmp_path / "corpus").iterdir())[0]
    changed.write_text("# New\n\nOnly this sentence is left of the first file.\n")
    ingest([tmp_path / "corpus"], store=uri, collection="docs", model=emb, workers=0,
           chunk_tokens=64, overlap=0)  # fmt: skip
    rows = _mapping(mapping)
    assert _metadata(tensor)["vectorstream.generation"] == "2"
    assert load_file(str(tensor))["embeddings"].shape[0] == len(rows)
    mine = [r for r in rows if r["source"] == str(changed.resolve())]
    assert [r["text"] for r in mine] == ["# New\n\nOnly this sentence is left of the first file."]


def test_float16_rows_and_a_named_key(tmp_path: Path) -> None:
    records = make_records(unit_rows(40, DIM, seed=3))
    uri = f"safetensors:{tmp_path / 'half.safetensors'}?dtype=float16&key=emb"
    with open_store(uri, dim=DIM) as store:
        store.upsert(records)
    tensors = load_file(str(tmp_path / "half.safetensors"))
    assert list(tensors) == ["emb"] and tensors["emb"].dtype == np.float16
    with open_store(uri, mode="r") as reader:
        for r in records[:10]:
            hit = reader.search(r.embedding.as_dense(), k=1)[0]
            assert hit.id == r.id and hit.score == pytest.approx(1.0, abs=1e-3)
    # A writer keeps the file's dtype when not told: still float16 after another write.
    with open_store(f"safetensors:{tmp_path / 'half.safetensors'}?key=emb", dim=DIM) as store:
        store.delete(ids=[records[0].id])
    assert load_file(str(tmp_path / "half.safetensors"))["emb"].dtype == np.float16


# -- files written by other tools ----------------------------------------------------------------


def test_reads_another_tools_tensor_and_text_list(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    matrix = unit_rows(30, DIM, seed=5) * rng.uniform(0.5, 3.0, (30, 1)).astype(np.float32)
    save_file(
        {"emb": matrix, "other": np.zeros(3, np.float32)}, str(tmp_path / "corpus.safetensors")
    )
    texts = [f"text number {i}" for i in range(30)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    uri = f"safetensors:{tmp_path / 'corpus.safetensors'}?key=emb&texts=texts.txt"
    with open_store(uri, mode="r") as store:
        assert store.count() == 30 and store.dim == DIM
        hit = store.search(matrix[7], k=1)[0]  # not unit-norm: still cosine
        assert (hit.id, hit.text, hit.score) == ("7", texts[7], pytest.approx(1.0, abs=1e-5))
        assert store.models() == frozenset()

    # JSON lines with a text field; other keys become metadata, which filters select on.
    half = unit_rows(20, DIM, seed=6).astype(np.float16)
    save_file({"embeddings": half}, str(tmp_path / "j.safetensors"))
    lines = [{"text": f"t{i}", "lang": "en" if i % 2 else "fr"} for i in range(20)]
    (tmp_path / "j.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    with open_store(f"safetensors:{tmp_path / 'j.safetensors'}", mode="r") as store:
        hits = store.search(half[1].astype(np.float32), k=20, where={"metadata.lang": "en"})
        assert hits[0].text == "t1" and {h.metadata["lang"] for h in hits} == {"en"}
        assert len(hits) == 10
        ranged = store.range_search(half[1].astype(np.float32), 0.0, where={"metadata.lang": "en"})
        assert [h.text for h in ranged] == ["t1"]
    # A writer takes such a pair as it is and rewrites it in vectorstream's layout.
    extra = make_records(unit_rows(1, DIM, seed=7), prefix="new")
    with open_store(f"safetensors:{tmp_path / 'j.safetensors'}", dim=DIM) as store:
        assert store.count() == 20
        store.upsert(extra)
    rows = _mapping(tmp_path / "j.jsonl")
    assert [r["id"] for r in rows] == [str(i) for i in range(20)] + ["new0"]  # by source: "" first
    assert rows[1]["metadata"] == {"lang": "en"} and rows[1]["text"] == "t1"
    assert _metadata(tmp_path / "j.safetensors")["vectorstream.rows"] == "21"
    assert load_file(str(tmp_path / "j.safetensors"))["embeddings"].dtype == np.float16
    with pytest.raises(ConfigError, match="holds 16-dimensional rows"):
        open_store(f"safetensors:{tmp_path / 'j.safetensors'}", dim=8)


def _foreign_pair(folder: Path, rows: int = 12, dim: int = DIM) -> tuple[np.ndarray, str]:
    matrix = unit_rows(rows, dim, seed=9)
    save_file({"emb": matrix}, str(folder / "c.safetensors"))
    (folder / "c.txt").write_text("".join(f"row {i}\n" for i in range(rows)), encoding="utf-8")
    return matrix, f"safetensors:{folder / 'c.safetensors'}?key=emb&texts=c.txt"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"truncated: its header describes \d+ bytes, the file has \d+"),
        ("wrong key", r"has no tensor 'nope'; it holds \['emb'\]: name the one to use with \?key="),
        ("fewer texts", r"holds 12 rows under 'emb' but .*c\.txt has 11"),
        ("nan rows", r"2 of 12 rows of 'emb' hold NaN or infinite values \(rows 3, 8\)"),
        ("zero row", r"1 of 12 rows of 'emb' hold only zeros \(rows 4\)"),
        ("not safetensors", r"is truncated or not a safetensors file"),
        ("no mapping", r"the mapping file .*c\.txt is missing"),
    ],
)
def test_bad_files_are_refused_with_a_clear_error(
    tmp_path: Path, damage: str, message: str
) -> None:
    matrix, uri = _foreign_pair(tmp_path)
    tensor = tmp_path / "c.safetensors"
    if damage == "truncate":
        os.truncate(tensor, tensor.stat().st_size - 100)
    elif damage == "wrong key":
        uri = uri.replace("key=emb", "key=nope")
    elif damage == "fewer texts":
        (tmp_path / "c.txt").write_text("".join(f"row {i}\n" for i in range(11)), "utf-8")
    elif damage in ("nan rows", "zero row"):
        matrix = matrix.copy()
        if damage == "nan rows":
            matrix[3, 0], matrix[8, 5] = np.nan, np.inf
        else:
            matrix[4] = 0.0
        save_file({"emb": matrix}, str(tensor))
    elif damage == "not safetensors":
        tensor.write_bytes(b"\xff" * 64)
    elif damage == "no mapping":
        (tmp_path / "c.txt").unlink()
    with pytest.raises(StoreError, match=message):
        open_store(uri, mode="r")


def test_a_tensor_of_another_dimension_than_the_model(tmp_path: Path) -> None:
    _, uri = _foreign_pair(tmp_path, dim=8)
    with pytest.raises(
        ConfigError, match="holds 8-dimensional rows under 'emb' but the model makes 16"
    ):
        open_store(uri, mode="r", dim=16)
    with open_store(uri, mode="r") as store, pytest.raises(ConfigError, match="dimension 16"):
        store.search(np.ones(16, np.float32), k=3)


# -- atomic rewrites -----------------------------------------------------------------------------


def test_a_tensor_and_a_mapping_of_two_generations_are_refused(
    tmp_path: Path, quick_retries: None
) -> None:
    records = make_records(unit_rows(20, DIM))
    with open_store(f"safetensors:{tmp_path}", "docs", dim=DIM) as store:
        store.upsert(records[:10])
        store.flush()
        shutil.copy(tmp_path / "docs.safetensors", tmp_path / "gen1.safetensors")
        store.upsert(records[10:])
    shutil.copy(tmp_path / "gen1.safetensors", tmp_path / "docs.safetensors")
    with pytest.raises(StoreError, match="are of different generations"):
        open_store(f"safetensors:{tmp_path}", "docs", mode="r")
    with pytest.raises(StoreError, match="a writer will not build on it"):
        open_store(f"safetensors:{tmp_path}", "docs", dim=DIM)


_CHILD = """
import os, sys
sys.path.insert(0, {tests!r})
from _store_support import make_records, unit_rows
from vectorstream.stores import _st_writer, open_store

records = make_records(unit_rows(60, {dim}))
store = open_store({uri!r}, "docs", dim={dim})
store.upsert(records[:20])
store.flush()
store.upsert(records[20:])
store.delete(ids=[records[0].id])
if {kill_at_rename!r}:
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith(".safetensors"):
            os._exit(9)  # killed between the mapping's rename and the tensor's
        real(src, dst)
    _st_writer.os.replace = replace
    store.flush()
os._exit(9)  # killed with the journal unpublished
"""


def _killed_writer(uri: str, kill_at_rename: bool) -> None:
    code = _CHILD.format(tests=str(HERE), dim=DIM, uri=uri, kill_at_rename=kill_at_rename)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()[-2000:]


@pytest.mark.parametrize("kill_at_rename", [False, True])
def test_a_killed_writer_leaves_a_whole_pair_and_the_next_one_finishes(
    tmp_path: Path, quick_retries: None, kill_at_rename: bool
) -> None:
    uri = f"safetensors:{tmp_path}"
    _killed_writer(uri, kill_at_rename)
    want = {r.id for r in make_records(unit_rows(60, DIM))[1:]}
    if kill_at_rename:
        # The new mapping is in place beside the old tensor: refused, never served mixed.
        with pytest.raises(StoreError, match="different generations"):
            open_store(uri, "docs", mode="r")
    else:
        with open_store(uri, "docs", mode="r") as reader:  # the first publish, whole
            assert reader.count() == 20
    with open_store(uri, "docs", dim=DIM) as writer:  # finishes the rename or replays the journal
        assert writer.ids() == want
    with open_store(uri, "docs", mode="r") as reader:
        assert reader.ids() == want
        assert load_file(str(tmp_path / "docs.safetensors"))["embeddings"].shape == (59, DIM)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.vs-journal*"))


def test_an_ingest_killed_midway_then_run_again_ends_with_the_reference_records(
    tmp_path: Path,
) -> None:
    write_big_corpus(tmp_path / "corpus", files=6, paragraphs=16)
    reference = f"safetensors:{tmp_path / 'ref'}"
    assert ingest(
        [tmp_path / "corpus"], store=reference, model=FakeEmbedder(), buffer=64, workers=0
    ).ok
    uri = f"safetensors:{tmp_path / 'out'}"
    journal = tmp_path / "out" / "documents.safetensors.vs-journal.jsonl"
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_resume_child.py"),
            str(tmp_path / "corpus"),
            uri,
            "0",
            "0.02",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_bytes().count(b"\n") > 1):
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the ingest wrote nothing within a minute"
        time.sleep(0.05)
    child.kill()
    child.wait(timeout=30)
    if child.stderr:
        child.stderr.close()
    assert not (tmp_path / "out" / "documents.safetensors").exists()  # nothing published yet
    again = ingest([tmp_path / "corpus"], store=uri, model=FakeEmbedder(), buffer=64, workers=0)
    assert again.ok
    with open_store(uri, mode="r") as got, open_store(reference, mode="r") as want:
        assert got.ids() == want.ids() and got.count() == want.count()
    assert (tmp_path / "out" / "documents.jsonl").read_bytes() == (
        tmp_path / "ref" / "documents.jsonl"
    ).read_bytes()  # the same rows in the same order, whatever order they were written in
    np.testing.assert_array_equal(
        load_file(str(tmp_path / "out" / "documents.safetensors"))["embeddings"],
        load_file(str(tmp_path / "ref" / "documents.safetensors"))["embeddings"],
    )


def test_readers_never_see_a_half_written_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def slow_replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if str(dst).endswith(".jsonl"):
            time.sleep(0.02)  # hold the window between the two renames open

    monkeypatch.setattr(os, "replace", slow_replace)
    uri = f"safetensors:{tmp_path}"
    records = make_records(unit_rows(400, DIM))
    writer = open_store(uri, "docs", dim=DIM)
    writer.upsert(records[:100])
    writer.flush()
    counts = {100}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def read() -> None:
        while not stop.is_set():
            try:
                with open_store(uri, "docs", mode="r") as reader:
                    n = reader.count()
                    hits = reader.search(records[0].embedding.as_dense(), k=3)
                    assert hits[0].id == records[0].id
                    seen.append(n)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(12):  # rewrites of growing and shrinking length
            writer.upsert(records[100 + 25 * i : 125 + 25 * i])
            if i % 3 == 2:
                writer.delete(ids=[r.id for r in records[100 + 25 * i : 110 + 25 * i]])
            writer.flush()
            counts.add(writer.count())
    finally:
        stop.set()
        for t in threads:
            t.join()
        writer.close()
    assert not errors, errors[0]
    assert seen and set(seen) <= counts


# -- read-only openers: no lock, no writes, several at once ----------------------------------------


def test_several_read_only_openers_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    records = make_records(unit_rows(50, DIM))
    with open_store(f"safetensors:{tmp_path / 'src'}", "docs", dim=DIM) as store:
        store.upsert(records)
    replica = tmp_path / "replica"  # the pair copied to another machine: nothing else
    replica.mkdir()
    for name in ("docs.safetensors", "docs.jsonl"):
        shutil.copy(tmp_path / "src" / name, replica / name)
    uri = f"safetensors:{replica}"
    writer = open_store(uri, "docs", dim=DIM)
    try:
        with pytest.raises(StoreLockedError):
            open_store(uri, "docs", dim=DIM)
        a, b = open_store(uri, "docs", mode="r"), open_store(uri, "docs", mode="r")
        q = records[7].embedding.as_dense()
        assert [h.id for h in a.search(q, k=5)] == [h.id for h in b.search(q, k=5)]
        assert a.search(q, k=1)[0].id == records[7].id
        with pytest.raises(StoreError, match="read-only"):
            a.side_table("manifest").put_many({"x": {"y": 1}})
        with pytest.raises(StoreError, match="read-only"):
            a.upsert(records[:1])
        code = textwrap.dedent(f"""
            import numpy as np
            from vectorstream.stores import open_store
            with open_store({uri!r}, "docs", mode="r") as s:
                print(s.count(), s.search(np.array({q.tolist()!r}, np.float32), k=1)[0].id)
        """)
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
        assert other.stdout.decode().split() == ["50", records[7].id], other.stderr.decode()
        a.close()
        b.close()
    finally:
        writer.close()
    # Readers left nothing behind: only the writer made its lock and (empty) manifest is absent.
    assert sorted(p.name for p in replica.iterdir()) == [
        "docs.jsonl",
        "docs.safetensors",
        "docs.safetensors.lock",
    ]


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    for uri, options, message in [
        (f"safetensors:{tmp_path}?colour=red", {}, r"unknown safetensors options: \['colour'\]"),
        (f"safetensors:{tmp_path}?key=a&key=b", {}, "given twice"),
        (f"safetensors:{tmp_path}?key=a", {"key": "b"}, "both in the URI"),
        (f"safetensors:{tmp_path}", {"dtype": "int8"}, "dtype must be one of"),
        (f"safetensors:{tmp_path}?texts=t.txt", {}, "writes its mapping as JSON Lines"),
        (f"safetensors:{tmp_path}", {"kind": "sparse"}, "hold dense embeddings, not sparse"),
    ]:
        with pytest.raises(ConfigError, match=message):
            open_store(uri, "docs", dim=DIM, **options)
    with pytest.raises(ConfigError, match="cannot name a file"):
        SafetensorsStore.open(f"safetensors:{tmp_path}", "a/b", dim=DIM)


# -- the command line and the service ------------------------------------------------------------


def test_cli_ingest_then_search(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    store = f"safetensors:{tmp_path / 'out'}"
    model = str(minilm_folder())
    runner = CliRunner()
    result = runner.invoke(
        app(), ["ingest", str(tmp_path / "corpus"), "--store", store, "--model", model, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vectors"] > 0
    assert (tmp_path / "out" / "documents.safetensors").is_file()
    result = runner.invoke(
        app(),
        ["search", "baking bread with olive oil", "--store", store, "--model", model, "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hits"][0]["source"] == str(corpus["cooking"].resolve())


def app() -> Any:
    from vectorstream.cli.main import app as cli

    return cli


def _serve(uri: str, model: Any, check: Any) -> None:
    from vectorstream.server import ServerSettings, create_app

    async def main() -> None:
        settings = ServerSettings(store=uri, collection="docs")
        async with client_for(create_app(settings, model=model)) as client:
            await check(client)

    asyncio.run(main())


def test_the_service_answers_similar_from_the_pair(tmp_path: Path) -> None:
    model = ServerFakeEmbedder()
    uri = f"safetensors:{tmp_path}"
    build_store(uri, "docs", model, CORPUS)

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/similar", json={"text": "tomato soup recipe", "num_results": 2})
        assert r.status_code == 200, r.text
        assert r.json()["text"][0] == CORPUS["cooking-soup"] and len(r.json()["text"]) == 2
        body = {"query": "planet rovers", "k": 5, "where": {"source": ["space-mars", "space-moon"]}}
        r = await client.post("/v1/search", json=body)
        assert {h["source"] for h in r.json()["data"]} == {"space-mars", "space-moon"}
        r = await client.post(
            "/v1/search", json={"query": "tomato soup", "mode": "range", "beta": 0}
        )
        assert [h["text"] for h in r.json()["data"]] == [CORPUS["cooking-soup"]]

    _serve(uri, model, check)
    assert not (tmp_path / "docs.safetensors.vs-manifest.sqlite").exists()  # nothing written


def test_the_service_refuses_a_bad_pair_and_another_dimension(tmp_path: Path) -> None:
    model = ServerFakeEmbedder()
    uri = f"safetensors:{tmp_path}"
    build_store(uri, "docs", model, CORPUS)
    tensor = tmp_path / "docs.safetensors"

    async def wrong_dim(client: httpx.AsyncClient) -> None:
        r = await client.post("/similar", json={"text": "tomato soup", "num_results": 2})
        assert r.status_code == 400 and "dimension 16" in r.json()["error"]["message"], r.text

    _serve(uri, ServerFakeEmbedder(dim=16), wrong_dim)

    os.truncate(tensor, tensor.stat().st_size - 8)

    async def truncated(client: httpx.AsyncClient) -> None:
        r = await client.post("/similar", json={"text": "tomato soup", "num_results": 2})
        assert r.status_code == 404 and "truncated" in r.json()["error"]["message"], r.text

    _serve(uri, model, truncated)
