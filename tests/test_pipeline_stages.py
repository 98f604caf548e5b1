"""Each stage on its own (fakes at the store and model seams), and the commit invariant against a
store that fails at every call in turn."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from _pipeline_support import TOPICS, FakeEmbedder, FlakyStore, MemoryStore, write_corpus
from vectorstream.chunking import ChunkOptions
from vectorstream.errors import ConfigError, StoreUnavailableError
from vectorstream.parsers import ParseOptions
from vectorstream.pipeline import Manifest, ManifestEntry, Pipeline, PipelineOptions
from vectorstream.pipeline.stages import (
    ChunkBatch,
    Committer,
    EmbedStage,
    Planner,
    ProcessConfig,
    RecordBatch,
    Skip,
    SourceDone,
    SourceFailed,
    SourceProcessor,
    SourceUnchanged,
    Task,
)
from vectorstream.sources import from_texts, iter_files
from vectorstream.stores._sidetable import MemorySideTable
from vectorstream.stores.retry import RetryPolicy
from vectorstream.types import Chunk, Source

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, deadline=30.0)


def _config(emb: FakeEmbedder) -> ProcessConfig:
    return ProcessConfig(
        tokenizer_path=str(emb.tokenizer_path),
        max_tokens=emb.max_tokens,
        num_special_tokens=emb.num_special_tokens,
        chunk_options=ChunkOptions(chunk_tokens=40, overlap=0),
        parse_options=ParseOptions(),
    )


# ---------------------------------------------------------------------------------- plan


def test_plan_skips_same_stat_and_settings_and_hands_the_hash_on_otherwise() -> None:
    manifest = Manifest(MemorySideTable())
    manifest.put(
        [
            ManifestEntry("/a", 10, 100, "ha", "S", 2),
            ManifestEntry("/b", 10, 100, "hb", "S", 2),
            ManifestEntry("/c", 10, 100, "hc", "OLD", 2),
        ]
    )
    manifest.mark_pending(["/d"])
    planner = Planner(manifest, "S")
    same = Source("/a", path="/a", size=10, mtime_ns=100)
    touched = Source("/b", path="/b", size=10, mtime_ns=999)
    resettled = Source("/c", path="/c", size=10, mtime_ns=100)
    pending = Source("/d", path="/d", size=1, mtime_ns=1)
    new = Source("/e", path="/e", size=1, mtime_ns=1)
    a, b, c, d, e = planner.plan([same, touched, resettled, pending, new])
    assert a == Skip("/a", "unchanged")
    assert isinstance(b, Task) and b.known_hash == "hb"  # same bytes are recognised by hash
    assert isinstance(c, Task) and c.known_hash is None  # other settings: embed again
    assert isinstance(d, Task) and d.known_hash is None and d.known is None
    assert isinstance(e, Task) and e.known is None


def test_plan_prunes_gone_sources_and_those_under_the_walked_roots(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    elsewhere = tmp_path / "other" / "still.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("x")
    manifest = Manifest(MemorySideTable())
    manifest.put([ManifestEntry(str(p), 1, 1, "h", "S", 1) for p in (kept, elsewhere)])
    manifest.mark_pending([str(tmp_path / "gone.txt"), "in-memory-id"])
    planner = Planner(manifest, "S")
    assert planner.prune([str(kept)], []) == [str(tmp_path / "gone.txt")]
    # A file not seen under a walked root is dropped even though it exists (excluded by a glob).
    assert planner.prune([str(kept)], [str(tmp_path / "other")]) == sorted(
        [str(tmp_path / "gone.txt"), str(elsewhere)]
    )


# ---------------------------------------------------------------------------------- process


def test_process_streams_batches_then_exactly_one_terminal_message(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    proc = SourceProcessor(_config(emb))
    text = "\n\n".join(f"Paragraph {i}. " + TOPICS["cooking"] * 3 for i in range(40))
    src = Source("doc", text=text)
    msgs = list(proc.process(Task(src)))
    batches = [m for m in msgs if isinstance(m, ChunkBatch)]
    assert len(batches) >= 2 and isinstance(msgs[-1], SourceDone)
    chunks = [c for b in batches for c in b.chunks]
    assert msgs[-1].chunks == len(chunks) and [c.chunk_index for c in chunks] == list(
        range(len(chunks))
    )
    # The same bytes under a known hash: nothing is parsed.
    again = list(proc.process(Task(src, known_hash=msgs[-1].content_hash)))
    assert again == [SourceUnchanged("doc", msgs[-1].content_hash)]


def test_process_fails_a_bad_source_without_raising(tmp_path: Path) -> None:
    proc = SourceProcessor(_config(FakeEmbedder()))
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 this is not a pdf")
    empty = Source("empty", text="   ")
    pdf = next(iter(iter_files([broken])))
    (bad,) = list(proc.process(Task(pdf)))
    assert isinstance(bad, SourceFailed) and bad.stage == "parse"
    (nothing,) = list(proc.process(Task(empty)))
    assert isinstance(nothing, SourceFailed) and nothing.error_type == "EmptyDocument"


# ---------------------------------------------------------------------------------- embed


def test_embed_makes_deterministic_records_and_counts_real_tokens() -> None:
    emb = FakeEmbedder()
    stage = EmbedStage(emb)
    chunks = [Chunk("alpha beta gamma", "s", 0, 0, 16), Chunk("delta", "s", 1, 17, 22)]
    batch = stage.embed(stage.encode(chunks))
    again = stage.embed(stage.encode(chunks))
    assert [r.id for r in batch.records] == [r.id for r in again.records]
    assert len(set(r.id for r in batch.records)) == 2
    assert batch.records[0].embedding.kind == "dense"
    np.testing.assert_allclose(batch.records[1].embedding.as_dense(), emb.embed(["delta"])[0])
    assert batch.tokens == 3 * 2 + 1 * 2 + 2 or batch.tokens > 2  # special tokens included


class _SparseModel(FakeEmbedder):
    kind = "sparse"


def test_a_store_that_cannot_hold_the_kind_is_refused_before_any_work() -> None:
    emb = _SparseModel()
    store = MemoryStore()
    with pytest.raises(ConfigError, match=r"memory://test.*sparse"):
        Pipeline(emb, store, PipelineOptions(workers=0)).run(from_texts({"a": "text"}))
    assert emb.calls == 0 and store.count() == 0


# ---------------------------------------------------------------------------------- commit


def _records(emb: FakeEmbedder, uri: str, texts: list[str]) -> RecordBatch:
    stage = EmbedStage(emb)
    chunks = [Chunk(t, uri, i, 0, len(t)) for i, t in enumerate(texts)]
    return stage.embed(stage.encode(chunks))


def test_commit_finishes_a_source_only_when_all_its_records_are_in() -> None:
    emb, store = FakeEmbedder(), MemoryStore()
    manifest = Manifest(MemorySideTable())
    # An old version of "a" is in the store; its row was lost.
    store.upsert(_records(emb, "a", ["old one", "old two"]).records)
    c = Committer(store, manifest, "S", FAST_RETRY)
    c.begin(Task(Source("a", text="x")))
    c.begin(Task(Source("b", text="y")))
    first = _records(emb, "a", ["new one", "new two"])
    c.add(RecordBatch(first.records[:1], 1, 1))
    c.source_done(SourceDone("a", "ha", 2, 10))
    assert c.commit() == []  # one of two records: not finished, no row, old records kept
    assert manifest.get("a") is None and manifest.is_pending("a")
    assert {"old one", "old two"} <= set(store.texts().values())
    c.add(RecordBatch(first.records[1:], 1, 1))
    c.add(_records(emb, "b", ["bee"]))
    # a is complete (b has no SourceDone yet): its stale records go at once, its row waits for
    # the next manifest write (one per commit)
    assert c.commit() == []
    assert sorted(store.texts().values()) == ["bee", "new one", "new two"]
    assert manifest.get("a") is None and c.due(rows=10**6, seconds=0.0)
    assert c.flush() == ["a"]
    entry = manifest.get("a")
    assert entry is not None and (entry.content_hash, entry.chunks, entry.settings) == (
        "ha",
        2,
        "S",
    )
    c.source_failed(SourceFailed("b", "parse", "X", "broken late"))
    assert sorted(store.texts().values()) == ["new one", "new two"]
    assert manifest.states(["b"]) == {} and c.counters.deleted == 3


def test_unchanged_source_refreshes_its_stat() -> None:
    manifest = Manifest(MemorySideTable())
    old = ManifestEntry("/f", 5, 1, "h", "S", 4)
    manifest.put(old)
    c = Committer(MemoryStore(), manifest, "S", FAST_RETRY)
    c.begin(Task(Source("/f", path="/f", size=5, mtime_ns=2), "h", old))
    c.source_unchanged(SourceUnchanged("/f", "h"))
    assert manifest.get("/f") == ManifestEntry("/f", 5, 2, "h", "S", 4)


# ---------------------------------------------------------------------------------- failing store


def _sources(root: Path) -> list[Source]:
    return list(iter_files([root]))


def _run(store: object, root: Path, *, prune: bool = True) -> object:
    opts = PipelineOptions(
        workers=0,
        retry=FAST_RETRY,
        prune=prune,
        commit_rows=3,
        chunk=ChunkOptions(chunk_tokens=24, overlap=0),
    )
    return Pipeline(FakeEmbedder(), store, opts).run(_sources(root), roots=[str(root)])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, MemoryStore, dict[str, str], int]:
    """A store holding corpus v1; the folder now holds v2 (one file changed, one gone, one new),
    the reference records of v2, and how many store calls a v1 → v2 run makes."""
    root = tmp_path_factory.mktemp("corpus")
    files = write_corpus(root, copies=1)
    base = MemoryStore()
    _run(base, root)
    files["cooking"].write_text("Bread without yeast: flatbread on a hot iron pan.\n" * 4)
    files["sailing"].unlink()
    (root / "new.txt").write_text("Kites fly when the wind is steady and the line is long.\n")
    reference = MemoryStore()
    _run(reference, root)
    probe = FlakyStore(_copy(base), fail_at=None)
    _run(probe, root)
    assert probe.inner.texts() == reference.texts()
    return root, base, reference.texts(), len(probe.calls)


def _copy(store: MemoryStore) -> MemoryStore:
    out = MemoryStore()
    out.rows = dict(store.rows)
    for name, table in store.tables.items():
        out.side_table(name).put_many(dict(table.scan()))  # type: ignore[attr-defined]
    return out


def _manifest_ok(store: MemoryStore, root: Path) -> None:
    done = Manifest.of(store)
    uris = {str(p.resolve()) for p in root.iterdir()}
    assert set(done.uris()) == uris and len(done) == len(uris)


def test_every_store_call_failing_once_is_retried_to_the_same_result(scenario) -> None:  # type: ignore[no-untyped-def]
    root, base, reference, n_calls = scenario
    assert n_calls >= 10
    for n in range(1, n_calls + 1):
        store = FlakyStore(_copy(base), fail_at=n, times=1)
        report = _run(store, root)
        assert store.failed, n
        assert store.inner.texts() == reference, (n, store.failed)
        assert report.files_failed == 0, (n, store.failed)  # type: ignore[attr-defined]
        _manifest_ok(store.inner, root)


def test_a_store_that_goes_away_at_any_call_then_comes_back_ends_exact(scenario) -> None:  # type: ignore[no-untyped-def]
    root, base, reference, n_calls = scenario
    seen = set()
    for n in range(1, n_calls + 1):
        inner = _copy(base)
        store = FlakyStore(inner, fail_at=n, times=None)
        with pytest.raises(StoreUnavailableError):
            _run(store, root)
        seen.add(store.failed[0])
        # The store is back: the same run again finishes the job with exactly the right records.
        _run(inner, root)
        assert inner.texts() == reference, (n, store.failed[0])
        _manifest_ok(inner, root)
    assert {
        "upsert",
        "ids",
        "delete_ids",
        "manifest_put",
        "delete_source",
        "manifest_delete",
    } <= seen


def test_a_lost_manifest_leaves_no_stale_records(tmp_path: Path) -> None:
    files = write_corpus(tmp_path / "c", copies=1)
    store = MemoryStore()
    _run(store, tmp_path / "c")
    store.tables.clear()  # the manifest is gone (another machine, a new container, a wipe)
    files["cooking"].write_text("Only this new text about sourdough starters remains.\n")
    fresh = MemoryStore()
    _run(fresh, tmp_path / "c")
    _run(store, tmp_path / "c")
    assert store.texts() == fresh.texts()


def test_pinning_options_are_checked_and_honoured(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match="inference_cpus"):
        PipelineOptions(inference_cpus=(max(cpus) + 64,))
    opts = PipelineOptions(workers=0, inference_cpus=(cpus[0],), io_cpus=(cpus[-1],))
    store = MemoryStore()
    t0 = time.perf_counter()
    report = Pipeline(FakeEmbedder(), store, opts).run(from_texts({"a": TOPICS["cooking"]}))
    assert report.ok and store.count() == 1 and time.perf_counter() - t0 < 60
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's thread is left as it was


def test_a_store_written_alone_and_empty_at_start_is_not_asked_for_stale_records(
    tmp_path: Path,
) -> None:
    files = write_corpus(tmp_path / "c", copies=1)
    store = FlakyStore(MemoryStore(), fail_at=None)
    store.exclusive = True  # type: ignore[attr-defined]  # as an embedded store's writer says
    _run(store, tmp_path / "c")
    assert store.inner.count() > 0 and "ids" not in store.calls
    # Not empty any more: a changed file's old records are looked up and replaced.
    files["cooking"].write_text("Sourdough needs a lively starter.\n", encoding="utf-8")
    store.calls.clear()
    _run(store, tmp_path / "c")
    assert store.calls.count("ids") == 1
    fresh = MemoryStore()
    _run(fresh, tmp_path / "c")
    assert store.inner.texts() == fresh.texts()
