"""Writes made by workers elsewhere, settled by the commit stage (no Ray here: the worker side is
called in-process, as a Ray task would call it): LanceDB fragments committed by the driver,
retried writes, sources that fail after some of their records were written, stale rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from _servers_support import make_records
from vectorstream.errors import ConfigError
from vectorstream.pipeline import Manifest
from vectorstream.pipeline.stages import Committer, SourceDone, SourceFailed, Task, Written
from vectorstream.stores import open_store
from vectorstream.stores._distributed import remote_writes
from vectorstream.stores.retry import RetryPolicy
from vectorstream.types import Source

pytest.importorskip("lance")

POLICY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, deadline=10.0)
DIM = 16


def _task(uri: str) -> Task:
    return Task(Source(uri=uri, path=None, size=1, mtime_ns=1))


def _rows(store: object) -> list[tuple[str, str]]:
    table = store._table.to_arrow()  # type: ignore[attr-defined]
    return sorted(
        zip(table.column("source").to_pylist(), table.column("id").to_pylist(), strict=True)
    )


def test_fragments_become_visible_at_commit_and_settling_keeps_one_row_per_id(
    tmp_path: Path,
) -> None:
    store = open_store(f"lancedb://{tmp_path}", "docs", dim=DIM, mode="w")
    records = make_records(12, DIM, sources=2)  # doc-0.txt and doc-1.txt, 6 each
    a = [r for r in records if r.source == "doc-0.txt"]
    b = [r for r in records if r.source == "doc-1.txt"]
    # An earlier run left a stale record of doc-0 and a copy of one of its current ids.
    stale = replace(a[0], id="doc-0.txt#old")
    store.upsert([stale, a[1]])
    plan = remote_writes(store, store.uri, "docs")
    committer = Committer(store, Manifest.of(store), "S", POLICY, remote=plan)
    committer.begin(_task("doc-0.txt"), marked=True)
    committer.begin(_task("doc-1.txt"), marked=True)

    # Workers write; one block of doc-0 is written twice (a retried task), doc-1 fails later.
    first = plan.writer.write(a[:3], POLICY)
    again = plan.writer.write(a[:3], POLICY)
    rest = plan.writer.write(a[3:] + b, POLICY)
    assert all(r.staged is not None and len(r.sources) == 1 for r in first + rest)
    assert store.count() == 2  # nothing of theirs visible before the driver commits
    committer.add_written(Written(tuple(first + again), tokens=30, chunks=6))
    committer.add_written(Written(tuple(rest), tokens=90, chunks=9))
    committer.source_failed(SourceFailed("doc-1.txt", "parse", "ValueError", "broken"))
    committer.source_done(SourceDone("doc-0.txt", "h0", chunks=6, nbytes=60))
    finished = committer.commit() + committer.flush()

    assert finished == ["doc-0.txt"]
    assert _rows(store) == sorted(("doc-0.txt", r.id) for r in a)  # one row per id, no stale
    assert committer.counters.vectors == 6
    assert committer.counters.deleted >= 3  # the stale row, the old copy, the retried block
    assert Manifest.of(store).get("doc-0.txt") is not None
    assert Manifest.of(store).get("doc-1.txt") is None
    # A late copy of a finished source's block is never committed.
    committer.add_written(Written(tuple(plan.writer.write(a[:2], POLICY)), chunks=2))
    committer.commit()
    assert _rows(store) == sorted(("doc-0.txt", r.id) for r in a)
    store.close()


def test_rejected_records_count_toward_their_source(tmp_path: Path) -> None:
    store = open_store(f"lancedb://{tmp_path}", "docs", dim=DIM, mode="w")
    plan = remote_writes(store, store.uri, "docs")
    good = make_records(3, DIM, sources=1)
    bad = replace(
        good[2],
        id="doc-0.txt#bad",
        embedding=replace(good[2].embedding, dense=good[2].embedding.dense[:4]),
    )
    committer = Committer(store, Manifest.of(store), "S", POLICY, remote=plan)
    committer.begin(_task("doc-0.txt"), marked=True)
    receipts = plan.writer.write([*good, bad], POLICY)
    assert [rid for _, rid, _ in receipts[0].rejected] == ["doc-0.txt#bad"]
    committer.add_written(Written(tuple(receipts), chunks=4))
    committer.source_done(SourceDone("doc-0.txt", "h", chunks=4, nbytes=40))
    assert committer.commit() + committer.flush() == ["doc-0.txt"]
    assert store.count() == 3 and [rid for rid, _ in committer.counters.rejected] == [
        "doc-0.txt#bad"
    ]
    store.close()


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "qdrant", "milvus", "chroma"])
def test_stores_written_by_one_process_refuse_distributed_writes(kind: str, tmp_path: Path) -> None:
    uri = {
        "parquet": f"parquet:{tmp_path / 'x.parquet'}",
        "jsonl": f"jsonl:{tmp_path / 'x.jsonl'}",
        "qdrant": f"qdrant:{tmp_path / 'q'}",
        "milvus": f"milvus:{tmp_path / 'm.db'}",
        "chroma": f"chroma:{tmp_path / 'c'}",
    }[kind]
    with pytest.raises(ConfigError, match="Ray engine"):
        remote_writes(object(), uri, "docs")
