"""Memory-bounded LanceDB upkeep and parsing workers: appends instead of merges for new ids, no
whole-table compaction of a large multivector table, garbage collected in growing workers."""

from __future__ import annotations

import gc
import sys
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from vectorstream.pipeline.executors.pool import GarbageBound
from vectorstream.stores import _lance_optimize, _lance_write, open_store
from vectorstream.stores import lancedb as store_module
from vectorstream.stores._lance_optimize import IndexPolicy, optimize_table
from vectorstream.stores._lance_write import any_stored, write_rows
from vectorstream.stores.lancedb import LanceDBStore
from vectorstream.types import Embedding, Record

TOKENS, DIM = 50, 16
OLDER = timedelta(milliseconds=1)  # every version but the latest is old enough to go
ROW_BYTES = TOKENS * DIM * 4  # 3.2 KB of vectors a row


def _rows(ids: list[str], text: str = "t") -> pa.Table:
    return pa.table({"id": ids, "text": [text] * len(ids)})


def _multivector(n: int, seed: int, tokens: int = TOKENS) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [
        Record(
            id=f"s{seed}-{i}",
            embedding=Embedding(multivector=rng.standard_normal((tokens, DIM)).astype(np.float32)),
            text=f"text {seed} {i}",
            source=f"doc{seed}.md",
            chunk_index=i,
            start=0,
            end=4,
            model="m",
        )
        for i in range(n)
    ]


def _fragments(store: LanceDBStore) -> int:
    return int(store._table.stats()["fragment_stats"]["num_fragments"])


# -- writes ------------------------------------------------------------------------------------


def test_new_ids_are_appended_stored_ones_merged(tmp_path: Path) -> None:
    table = lancedb.connect(str(tmp_path)).create_table("t", schema=_rows(["x"]).schema)
    assert write_rows(table, _rows(["a", "b"])) is False  # empty table
    assert write_rows(table, _rows(["c", "d"])) is False  # none stored: an append
    assert write_rows(table, _rows(["d", "e"], "new")) is True  # "d" stored: a merge
    got = dict(zip(*table.to_arrow().select(["id", "text"]).to_pydict().values(), strict=True))
    assert got == {"a": "t", "b": "t", "c": "t", "d": "new", "e": "new"}


def test_stored_ids_are_found_past_the_first_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = lancedb.connect(str(tmp_path)).create_table("t", data=_rows(["a", "b", "c"]))
    monkeypatch.setattr(_lance_write, "IDS_PER_QUERY", 2)
    assert not any_stored(table, ["x", "y", "z", "w", "v"])
    assert any_stored(table, ["x", "y", "z", "w", "c"])  # only in the third query


def test_upsert_replaces_by_id_after_appends(tmp_path: Path) -> None:
    store = open_store(f"lancedb://{tmp_path}", "docs", dim=DIM, kind="multivector")
    assert isinstance(store, LanceDBStore)
    store.upsert(_multivector(5, 0))
    store.upsert(_multivector(5, 1))
    changed = [
        Record(
            id=r.id,
            embedding=r.embedding,
            text="changed",
            source=r.source,
            chunk_index=r.chunk_index,
            start=0,
            end=4,
            model="m",
        )
        for r in _multivector(2, 1)
    ]
    store.upsert(changed)
    assert store.count() == 10
    assert store.ids(source="doc1.md") == {f"s1-{i}" for i in range(5)}
    texts = store._table.search().where("text = 'changed'").limit(None).to_arrow()
    assert sorted(texts.column("id").to_pylist()) == ["s1-0", "s1-1"]
    store.close()


# -- compaction --------------------------------------------------------------------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> int:
    """A "sizeable" fragment is 20 rows here; returns a compaction limit of 50 rows' bytes."""
    monkeypatch.setattr(_lance_optimize, "SIZEABLE_FRAGMENT_BYTES", 20 * ROW_BYTES)
    return 50 * ROW_BYTES


def _policy(limit: int | None) -> IndexPolicy:
    return IndexPolicy(None, "", 10_000, ("id",), compact_max_bytes=limit)


def _store(tmp_path: Path) -> LanceDBStore:
    store = open_store(
        f"lancedb://{tmp_path}", "docs", dim=DIM, kind="multivector", cleanup_older_than=0.001
    )
    assert isinstance(store, LanceDBStore)
    return store


def test_small_multivector_table_is_compacted(tmp_path: Path, small_limits: int) -> None:
    store = _store(tmp_path)
    for seed in range(4):
        store.upsert(_multivector(5, seed))  # 20 rows in all: below the limit
    report = optimize_table(store._table, "docs", _policy(small_limits), OLDER)
    assert report.compacted and report.versions_after == 1
    assert _fragments(store) == 1 and store.count() == 20
    store.close()


def test_large_table_of_sizeable_fragments_is_not_compacted(
    tmp_path: Path, small_limits: int
) -> None:
    pytest.importorskip("lance")
    store = _store(tmp_path)
    for seed in range(4):
        store.upsert(_multivector(30, seed))  # 4 fragments of 30 rows, above the limit
    for seed in range(10, 13):
        store.upsert(_multivector(1, seed))  # and 3 small ones
    assert _fragments(store) == 7
    report = optimize_table(store._table, "docs", _policy(small_limits), OLDER)
    # The sizeable fragments stay; the small ones are merged; old versions are removed.
    assert report.compacted
    assert _fragments(store) == 5
    assert report.versions_after <= 2
    assert store.count() == 123
    query = _multivector(1, 2)[0].embedding
    assert [h.id for h in store.search(query, 1)] == ["s2-0"]
    # Nothing small left: the next optimize merges nothing.
    again = optimize_table(store._table, "docs", _policy(small_limits), OLDER)
    assert not again.compacted and _fragments(store) == 5
    # Without a limit (dense, sparse) LanceDB compacts it whole, as before.
    whole = optimize_table(store._table, "docs", _policy(None), OLDER)
    assert whole.compacted and _fragments(store) == 1
    store.close()


def test_without_pylance_a_large_table_is_left_alone(
    tmp_path: Path, small_limits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    for seed in range(3):
        store.upsert(_multivector(30, seed))
    monkeypatch.setitem(sys.modules, "lance", None)  # import lance raises ImportError
    report = optimize_table(store._table, "docs", _policy(small_limits), OLDER)
    assert not report.compacted
    assert _fragments(store) == 3 and report.versions_after == report.versions_before
    assert store.count() == 90
    store.close()


def test_store_bounds_compaction_for_multivector_tables_only(
    tmp_path: Path, small_limits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lance")
    monkeypatch.setattr(store_module, "COMPACT_MAX_BYTES", small_limits)
    multivector = _store(tmp_path / "mv")
    for seed in range(3):
        multivector.upsert(_multivector(30, seed))
    assert not multivector.optimize().compacted
    assert _fragments(multivector) == 3
    multivector.close()

    dense = open_store(f"lancedb://{tmp_path / 'dense'}", "docs", dim=TOKENS * DIM)
    assert isinstance(dense, LanceDBStore)
    rng = np.random.default_rng(0)
    for seed in range(3):  # as many bytes as the multivector rows: compacted all the same
        dense.upsert(
            [
                Record(
                    id=f"d{seed}-{i}",
                    embedding=Embedding(dense=rng.standard_normal(TOKENS * DIM).astype("f4")),
                    text="t",
                    source="a.md",
                    chunk_index=i,
                    start=0,
                    end=1,
                    model="m",
                )
                for i in range(30)
            ]
        )
    assert dense.optimize().compacted
    assert _fragments(dense) == 1
    dense.close()


# -- parsing workers ---------------------------------------------------------------------------


class _Cycle:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.me = self


def test_garbage_is_collected_when_the_worker_grows() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # cycles must wait for GarbageBound, not for the interpreter's own collections
    try:
        bound = GarbageBound(grow_bytes=4 * 2**20)
        assert bound.source_done() is False  # nothing grew
        refs: list[Any] = []
        for _ in range(8):
            cycle = _Cycle(bytes(bytearray(2**20)))  # 1 MiB, written: resident
            refs.append(weakref.ref(cycle))
            del cycle
        assert all(r() is not None for r in refs)  # garbage, not yet collected
        assert bound.source_done() is True
        assert bound.collections == 1
        assert all(r() is None for r in refs)
        assert bound.source_done() is False  # nothing grew since
    finally:
        if was_enabled:
            gc.enable()
