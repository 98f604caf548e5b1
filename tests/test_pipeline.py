"""The streaming engine against real LanceDB, with a deterministic embedder at the model seam."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _pipeline_support import TOPICS, FakeEmbedder, write_corpus
from vectorstream.pipeline import Manifest, Pipeline, PipelineOptions, ingest
from vectorstream.pipeline.queues import BoundedQueue, Closed
from vectorstream.stores import open_store


def _store_uri(tmp_path: Path) -> str:
    return f"lancedb://{tmp_path / 'store'}"


def _rows(uri: str) -> dict[str, str]:
    """id -> text of every stored record, read back through the store's own table."""
    import lancedb

    db = lancedb.connect(uri.split("://", 1)[1])
    table = db.open_table("documents")
    data = table.to_arrow().select(["id", "text"]).to_pylist()
    ids = [r["id"] for r in data]
    assert len(ids) == len(set(ids)), "duplicate ids in the store"
    return {r["id"]: r["text"] for r in data}


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")


@pytest.mark.parametrize("workers", [0, 1])
def test_round_trip_finds_the_right_source(
    tmp_path: Path, corpus: dict[str, Path], workers: int
) -> None:
    emb = FakeEmbedder()
    uri = _store_uri(tmp_path)
    report = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=workers)
    assert report.ok, report.errors
    assert report.files_ok == len(TOPICS)
    assert report.vectors == report.chunks > len(TOPICS)
    rows = _rows(uri)
    assert len(rows) == report.vectors
    assert all("noise" not in t and "color: red" not in t for t in rows.values())
    store = open_store(uri, "documents")
    try:
        for topic, path in corpus.items():
            hits = store.search(emb.embed([TOPICS[topic]])[0], k=3)
            assert hits[0].source == str(path.resolve())
    finally:
        store.close()


def test_workers_and_thread_mode_write_identical_records(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    a, b = f"lancedb://{tmp_path / 'a'}", f"lancedb://{tmp_path / 'b'}"
    ingest([tmp_path / "corpus"], store=a, model=FakeEmbedder(), workers=0)
    ingest([tmp_path / "corpus"], store=b, model=FakeEmbedder(), workers=2)
    assert _rows(a) == _rows(b)


def test_rerun_skips_unchanged_and_replaces_changed(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    uri = _store_uri(tmp_path)
    emb = FakeEmbedder()
    first = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    before = _rows(uri)

    again = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert again.files_skipped == len(TOPICS) and again.files_ok == 0 and again.chunks == 0
    assert _rows(uri) == before

    # Same bytes, new mtime: recognised by content hash, nothing embedded.
    path = corpus["cooking"]
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert touched.files_skipped == len(TOPICS) and touched.chunks == 0

    # Changed content: only that file is re-embedded and its old records are gone.
    src = str(path.resolve())
    store = open_store(uri, "documents")
    old_ids = store.ids(source=src)
    store.close()
    path.write_text("Completely different text about bicycles and gears.\n", encoding="utf-8")
    changed = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert changed.files_ok == 1 and changed.files_skipped == len(TOPICS) - 1
    assert changed.chunks == 1 and changed.records_deleted == len(old_ids)
    after = _rows(uri)
    assert not (old_ids & set(after))
    assert len(after) == len(before) - len(old_ids) + 1
    assert [t for t in after.values() if "bicycles" in t]
    assert first.files_ok == len(TOPICS)


def _count(rows: dict[str, str], needle: str) -> int:
    return sum(needle in t for t in rows.values())


def test_prune_removes_records_of_deleted_files(tmp_path: Path, corpus: dict[str, Path]) -> None:
    uri = _store_uri(tmp_path)
    emb = FakeEmbedder()
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    corpus["sailing"].unlink()
    kept = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert kept.files_pruned == 0 and _count(_rows(uri), "mainsail") > 0
    pruned = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0, prune=True)
    assert pruned.files_pruned == 1
    assert _count(_rows(uri), "mainsail") == 0


def test_model_change_re_embeds_everything(tmp_path: Path, corpus: dict[str, Path]) -> None:
    uri = _store_uri(tmp_path)
    ingest([tmp_path / "corpus"], store=uri, model=FakeEmbedder(dim=32), workers=0)
    old = set(_rows(uri))
    emb = FakeEmbedder(dim=32)
    emb.fingerprint = "fake-bow-32-v2"
    report = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert report.files_ok == len(TOPICS)
    new = set(_rows(uri))
    assert not (old & new) and len(new) == len(old)


def test_in_memory_sources_through_pipeline(tmp_path: Path) -> None:
    from vectorstream.sources import from_texts

    emb = FakeEmbedder()
    store = open_store(_store_uri(tmp_path), "documents", dim=emb.dim)
    events: list[str] = []
    try:
        report = Pipeline(
            emb,
            store,
            PipelineOptions(workers=0),
            on_event=lambda e: events.append(e.kind),
        ).run(from_texts({"a": TOPICS["cooking"], "b": TOPICS["sailing"]}))
        assert report.files_ok == 2 and store.count() == 2
        assert events.count("source_done") == 2 and events[-1] == "finished"
        assert threading.current_thread() is threading.main_thread()
        assert {e.uri for e in Manifest.of(store).get_many(["a", "b"]).values()} == {"a", "b"}
    finally:
        store.close()


def test_bounded_queue_blocks_on_items_and_bytes() -> None:
    q: BoundedQueue[int] = BoundedQueue(max_items=2, max_bytes=100)
    q.put(1, 60)
    with pytest.raises(TimeoutError):
        q.put(2, 60, timeout=0.05)  # bytes bound
    q.put(3, 40)
    with pytest.raises(TimeoutError):
        q.put(4, 1, timeout=0.05)  # items bound
    assert q.get() == 1 and q.get() == 3
    q.put(5, 1000)  # a single oversized item is admitted into an empty queue
    q.close()
    assert q.get() == 5
    with pytest.raises(Closed):
        q.get()
    assert q.peak_items == 2 and q.peak_bytes == 1000


def test_report_exit_codes_and_json(tmp_path: Path, corpus: dict[str, Path]) -> None:
    (tmp_path / "corpus" / "empty.txt").write_bytes(b"")
    report = ingest(
        [tmp_path / "corpus"], store=_store_uri(tmp_path), model=FakeEmbedder(), workers=0
    )
    assert report.exit_code == 1 and not report.ok
    d = report.to_dict()
    assert d["files_failed"] == 1 and d["errors"][0]["source"].endswith("empty.txt")
    assert d["errors"][0]["error_type"] == "EmptyDocument"


def test_copying_store_keeps_manifest_with_it(tmp_path: Path, corpus: dict[str, Path]) -> None:
    uri = _store_uri(tmp_path)
    ingest([tmp_path / "corpus"], store=uri, model=FakeEmbedder(), workers=0)
    shutil.copytree(tmp_path / "store", tmp_path / "copy")
    again = ingest(
        [tmp_path / "corpus"],
        store=f"lancedb://{tmp_path / 'copy'}",
        model=FakeEmbedder(),
        workers=0,
    )
    assert again.files_skipped == len(TOPICS)
    assert np.isfinite(again.seconds)


def test_missing_paths_are_reported_and_the_rest_ingested(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    missing = tmp_path / "nope.md"
    report = ingest(
        [tmp_path / "corpus", missing], store=_store_uri(tmp_path), model=FakeEmbedder(), workers=0
    )
    assert report.files_ok == len(TOPICS)
    assert [(e.source, e.error_type) for e in report.errors] == [(str(missing), "missing")]
    assert report.exit_code == 1


def test_script_without_main_guard_can_ingest(tmp_path: Path, corpus: dict[str, Path]) -> None:
    """Spawned workers must not re-run the calling script's top-level code."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "from _pipeline_support import FakeEmbedder\n"
        "from vectorstream.pipeline import ingest\n"
        "print('top-level ran')\n"
        f"r = ingest([{str(tmp_path / 'corpus')!r}], store={_store_uri(tmp_path)!r},"
        " model=FakeEmbedder(), workers=1)\n"
        "print('files', r.files_ok)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("top-level ran") == 1
    assert f"files {len(TOPICS)}" in out.stdout


def test_manifest_marks_sources_pending_before_their_records_land() -> None:
    """Pending rows name the sources whose records may be in the store unfinished (for --prune)."""
    from vectorstream.pipeline import ManifestEntry
    from vectorstream.stores._sidetable import MemorySideTable

    m = Manifest(MemorySideTable())
    m.mark_pending(["a", "b"])
    assert m.is_pending("a") and list(m.uris()) == ["a", "b"] and m.get("a") is None
    m.put(ManifestEntry("a", 1, 2, "h", "s", 3))
    assert not m.is_pending("a") and m.get("a") == ManifestEntry("a", 1, 2, "h", "s", 3)
    m.remove("b")
    assert list(m.uris()) == ["a"] and len(m) == 1


def test_partial_records_of_a_killed_run_are_replaced_when_the_file_changed(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    """Records written by an interrupted run for a file that then changed must not survive."""
    from vectorstream.pipeline.ids import record_id

    uri = _store_uri(tmp_path)
    emb = FakeEmbedder()
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    # Simulate a killed run: a record of a source that is pending but not finished.
    src = str((tmp_path / "corpus" / "new.txt").resolve())
    store = open_store(uri, "documents", dim=emb.dim)
    from vectorstream.types import Embedding, Record

    ghost = Record(
        id=record_id(src, 0, "old text", emb.fingerprint),
        embedding=Embedding(dense=emb.embed(["old text"])[0]),
        text="old text",
        source=src,
        chunk_index=0,
        start=0,
        end=8,
        model=emb.model_id,
    )
    Manifest.of(store).mark_pending([src])
    store.upsert([ghost])
    store.close()
    Path(src).write_text("New text about kites and wind.\n", encoding="utf-8")
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    rows = _rows(uri)
    assert ghost.id not in rows
    assert any("kites" in t for t in rows.values())


def test_a_locked_store_fails_the_run_with_a_clear_error(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    from vectorstream.errors import StoreLockedError

    uri = _store_uri(tmp_path)
    holder = open_store(uri, "documents", dim=32, mode="w")
    try:
        with pytest.raises(StoreLockedError):
            ingest([tmp_path / "corpus"], store=uri, model=FakeEmbedder(), workers=1)
    finally:
        holder.close()
    # Once the other writer is gone, the same run succeeds.
    assert ingest([tmp_path / "corpus"], store=uri, model=FakeEmbedder(), workers=1).ok


def test_a_lost_manifest_leaves_exactly_the_current_records(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    """The manifest wiped (another machine, a new container): old chunks of a changed file go."""
    uri = _store_uri(tmp_path)
    emb = FakeEmbedder()
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    store = open_store(uri, "documents", dim=emb.dim)
    manifest = Manifest.of(store)
    manifest.remove(list(manifest.uris()))
    store.close()
    corpus["cooking"].write_text(
        "A new recipe: steam the dumplings over bamboo.\n", encoding="utf-8"
    )
    again = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    fresh = f"lancedb://{tmp_path / 'fresh'}"
    ingest([tmp_path / "corpus"], store=fresh, model=emb, workers=0)
    assert _rows(uri) == _rows(fresh)
    assert again.files_ok == len(TOPICS)  # no row: every source is checked for old records


def test_a_per_machine_manifest_of_an_older_release_is_taken_over(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    import sqlite3

    from vectorstream.config import load_settings
    from vectorstream.pipeline.api import legacy_manifest_path

    uri = _store_uri(tmp_path)
    emb = FakeEmbedder()
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    store = open_store(uri, "documents", dim=emb.dim)
    manifest = Manifest.of(store)
    rows = {u: manifest.get(u) for u in manifest.uris()}
    manifest.remove(list(rows))
    store.close()
    # Write them where an older release kept them, in its schema.
    legacy = legacy_manifest_path(uri, "documents", load_settings().cache_path)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(legacy)
    db.executescript(
        "CREATE TABLE sources (uri TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
        " content_hash TEXT, settings TEXT, chunks INTEGER, updated_at REAL);"
        "CREATE TABLE pending (uri TEXT PRIMARY KEY)"
    )
    db.executemany(
        "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, 0)",
        [
            (e.uri, e.size, e.mtime_ns, e.content_hash, e.settings, e.chunks)
            for e in rows.values()
            if e
        ],
    )
    db.commit()
    db.close()
    again = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert again.files_skipped == len(TOPICS) and again.chunks == 0
    assert not legacy.exists() and legacy.with_name(legacy.name + ".taken-over").exists()


@pytest.mark.parametrize("target", ["one.parquet", "folder"])
def test_ingest_into_parquet_sinks(tmp_path: Path, corpus: dict[str, Path], target: str) -> None:
    """A sink cannot list its ids cheaply while writing: a fresh one is never asked to."""
    import pyarrow.parquet as pq

    out = tmp_path / target
    report = ingest([tmp_path / "corpus"], store=f"parquet:{out}", model=FakeEmbedder(), workers=0)
    assert report.ok and report.vectors == report.chunks > 0
    files = [out] if target.endswith(".parquet") else sorted(out.rglob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == report.vectors
