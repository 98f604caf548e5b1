"""The LanceDB store gives the heap its large writes freed back to the system (``_lance_memory``)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from vectorstream.stores import open_store
from vectorstream.stores._lance_memory import HeapTrimmer, release_free_heap
from vectorstream.stores.lancedb import LanceDBStore
from vectorstream.types import Embedding, Record

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")


def multivector_records(n: int, tokens: int, dim: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = rng.standard_normal((tokens, dim)).astype(np.float32)
        out.append(
            Record(
                id=f"r{seed}-{i}",
                embedding=Embedding(multivector=m),
                text=f"text {i}",
                source=f"s{i % 3}.md",
                chunk_index=i,
                start=0,
                end=6,
                model="m",
            )
        )
    return out


@glibc
def test_trimmer_counts_bytes_before_trimming() -> None:
    trimmer = HeapTrimmer(every_bytes=100)
    assert not trimmer.wrote(60)
    assert trimmer.wrote(60)  # 120 >= 100: trimmed, the count starts again
    assert not trimmer.wrote(60)
    assert trimmer.trims == 1
    assert trimmer.release() and trimmer.trims == 2
    with pytest.raises(ValueError):
        HeapTrimmer(every_bytes=0)


@glibc
def test_release_returns_what_another_thread_freed() -> None:
    proc = psutil.Process()
    held: list[bytes] = []

    def churn() -> None:
        # 64 KB blocks sit below malloc's mmap threshold: freed, they stay in the thread's arena.
        held.extend(b"x" * (64 * 1024) for _ in range(3000))
        del held[::2]  # freed in between live blocks: not returned by free() itself

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = proc.memory_info().rss
    assert release_free_heap()
    after = proc.memory_info().rss
    held.clear()
    assert before - after > 50 * 2**20, (before, after)


@glibc
def test_large_multivector_writes_trim_small_dense_ones_do_not(tmp_path: Path) -> None:
    store = open_store(f"lancedb://{tmp_path / 'mv'}", "docs", dim=32, kind="multivector")
    assert isinstance(store, LanceDBStore)
    # 4 commits of 40 rows x 1,000 tokens x 32 floats (5 MB each) against a 8 MB budget.
    store._trimmer = HeapTrimmer(every_bytes=8 * 2**20)
    for seed in range(4):
        store.upsert(multivector_records(40, 1000, 32, seed))
    assert store._trimmer.trims == 2
    assert store.count() == 160
    before = store._trimmer.trims
    store.optimize()
    assert store._trimmer.trims == before + 2  # before and after the compaction
    store.close()

    dense = open_store(f"lancedb://{tmp_path / 'd'}", "docs", dim=8)
    assert isinstance(dense, LanceDBStore)
    vectors = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    dense.upsert(
        [
            Record(
                id=f"d{i}",
                embedding=Embedding(dense=v),
                text="t",
                source="a",
                chunk_index=i,
                start=0,
                end=1,
                model="m",
            )
            for i, v in enumerate(vectors)
        ]
    )
    assert dense._trimmer.trims == 0
    dense.close()
