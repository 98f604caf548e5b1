"""The LanceDB store's in-memory search path: same answers as LanceDB's own, fresh after writes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vectorstream.stores import open_store
from vectorstream.stores.lancedb import LanceDBStore
from vectorstream.types import Embedding, Record

DIM = 48


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    # Not unit norm on purpose: cosine must not depend on the stored scale.
    return v * rng.uniform(0.5, 3.0, size=(n, 1)).astype(np.float32)


def records(vectors: np.ndarray, prefix: str = "r") -> list[Record]:
    return [
        Record(
            id=f"{prefix}{i}",
            embedding=Embedding(dense=v),
            text=f"text {prefix}{i}",
            source=f"{prefix}{i % 7}.md",
            chunk_index=i,
            start=0,
            end=10,
            page=i % 3 or None,
            metadata={"n": i},
            model="m",
        )
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"lancedb://{tmp_path / 'db'}"


def test_memory_path_answers_as_lancedb_does(uri: str) -> None:
    writer = open_store(uri, "docs", dim=DIM)
    writer.upsert(records(rows(2000, 1)))
    writer.close()
    memory = open_store(uri, "docs", mode="r")
    direct = open_store(uri, "docs", mode="r", memory_search_bytes=0)
    assert isinstance(memory, LanceDBStore)
    for q in rows(15, 2):
        a, b = memory.search(q, 10), direct.search(q, 10)
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert [(h.text, h.source, h.page, h.metadata) for h in a] == [
            (h.text, h.source, h.page, h.metadata) for h in b
        ]
        ra, rb = memory.range_search(q, 0.15, limit=500), direct.range_search(q, 0.15, limit=500)
        assert [h.id for h in ra] == [h.id for h in rb]
    assert memory._memory.snapshot is not None and len(memory._memory.snapshot) == 2000
    # A filter goes to LanceDB (a prefilter there) and is still honoured.
    hits = memory.search(rows(1, 3)[0], 5, where={"source": "r3.md"})
    assert hits and all(h.source == "r3.md" for h in hits)
    memory.close()
    direct.close()


def test_reader_sees_another_writers_rows(uri: str) -> None:
    writer = open_store(uri, "docs", dim=DIM)
    writer.upsert(records(rows(300, 4)))
    reader = open_store(uri, "docs", mode="r", refresh_interval=0)
    probe = rows(1, 5)[0]
    assert all(h.id != "new0" for h in reader.search(probe, 5))
    writer.upsert(records(probe[None, :], prefix="new"))
    # refresh_interval=0: the very next search sees the commit, whichever path answers it.
    hit = reader.search(probe, 1)[0]
    assert hit.id == "new0" and hit.score == pytest.approx(1.0, abs=1e-5)
    writer.delete(["new0"])
    assert reader.search(probe, 1)[0].id != "new0"
    writer.close()
    reader.close()


def test_own_writes_are_seen_at_once(uri: str) -> None:
    store = open_store(uri, "docs", dim=DIM)
    vectors = rows(200, 6)
    store.upsert(records(vectors))
    assert store.search(vectors[17], 1)[0].id == "r17"  # loads the snapshot
    store.delete(["r17"])
    assert store.search(vectors[17], 1)[0].id != "r17"
    store.upsert(records(vectors[17:18], prefix="again"))
    assert store.search(vectors[17], 1)[0].id == "again0"
    store.close()


def test_a_collection_over_the_budget_is_searched_by_lancedb(uri: str) -> None:
    store = open_store(uri, "docs", dim=DIM, memory_search_bytes=1000)
    vectors = rows(100, 7)
    store.upsert(records(vectors))
    assert [h.id for h in store.search(vectors[3], 1)] == ["r3"]
    assert store._memory.snapshot is None  # type: ignore[attr-defined]
    store.close()


def test_snapshot_follows_versions_at_most_every_refresh(uri: str) -> None:
    writer = open_store(uri, "docs", dim=DIM)
    writer.upsert(records(rows(50, 8)))
    reader = open_store(uri, "docs", mode="r", refresh_interval=0.2)
    assert isinstance(reader, LanceDBStore)
    reader.search(rows(1, 9)[0], 3)
    first = reader._memory.snapshot
    assert first is not None
    reader.search(rows(1, 9)[0], 3)
    assert reader._memory.snapshot is first  # same version: the snapshot is reused
    writer.upsert(records(rows(1, 10), prefix="x"))
    time.sleep(0.3)
    assert reader.search(rows(1, 10)[0], 1)[0].id == "x0"
    writer.close()
    reader.close()


def test_memory_search_bytes_is_validated(uri: str) -> None:
    from vectorstream.errors import ConfigError

    with pytest.raises(ConfigError, match="memory_search_bytes"):
        open_store(uri, "docs", dim=DIM, memory_search_bytes=-1)


def test_answers_from_memory_only_when_no_io_is_needed(uri: str) -> None:
    writer = open_store(uri, "docs", dim=DIM)
    writer.upsert(records(rows(40, 11)))
    writer.close()
    reader = open_store(uri, "docs", mode="r", refresh_interval=0.2)
    off = open_store(uri, "docs", mode="r", memory_search_bytes=0)
    assert isinstance(reader, LanceDBStore) and isinstance(off, LanceDBStore)
    assert not reader.answers_from_memory()  # nothing loaded yet
    reader.search(rows(1, 12)[0], 3)
    assert reader.answers_from_memory() and not reader.answers_from_memory({"source": "r1.md"})
    assert reader.models() == {"m"}  # from the snapshot
    time.sleep(0.3)
    assert not reader.answers_from_memory()  # the version must be checked again first
    off.search(rows(1, 12)[0], 3)
    assert not off.answers_from_memory()
    reader.close()
    off.close()
