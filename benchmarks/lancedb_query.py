"""Per-query latency of the LanceDB store: where the milliseconds go, and what we removed.

    .venv/bin/python benchmarks/lancedb_query.py            # 2k, 20k flat; 100k with the ANN index
    .venv/bin/python benchmarks/lancedb_query.py --quick    # 2k only

For each table size it times, interleaved round by round (so machine load hits all alike):

- ``numpy``: exact cosine top-10 over the vectors in memory (the floor: no storage at all);
- ``lancedb-sync``: LanceDB's public sync builder, as ``LanceDBStore`` used it before
  (``table.search(q).distance_type("cosine").where(...).limit(10).select(cols).to_arrow()``);
- ``store.search``: ``LanceDBStore.search`` (the query built and run in one hop to LanceDB's loop);
- ``store.search+filter``: the same with ``where={"source": ..., "metadata.lang": "en"}``;
- ``store.range``: ``range_search(q, beta=0.05)``;
- ``open+search+close``: what ``vectorstream.search(store=URI)`` pays per call for the store.

Then, on a 100k-row table before and after ``optimize()`` adds the BTREE indexes on ``id`` and
``source``, the writes the pipeline makes: a merge-upsert of 5,000 rows (half of them new), a
delete by source, ``ids(source)``.

Prints tables of medians and writes ``benchmarks/results/lancedb_query.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_info, write_json
from vectorstream.stores.lancedb import LanceDBStore
from vectorstream.types import Embedding, Record

DIM = 384
COLUMNS = ["id", "text", "source", "page", "start", "end", "chunk_index", "headings", "metadata"]


def _records(vectors: np.ndarray, start: int, stop: int, prefix: str = "r") -> list[Record]:
    return [
        Record(
            id=f"{prefix}{i}",
            embedding=Embedding(dense=vectors[i % len(vectors)]),
            text=f"chunk {i} " * 30,
            source=f"doc{i % 50}.txt",
            chunk_index=i,
            start=0,
            end=300,
            model="bench",
            page=i % 10,
            metadata={"lang": "en" if i % 2 else "fr"},
        )
        for i in range(start, stop)
    ]


def build(path: Path, rows: int, index: bool, optimize: bool = True) -> np.ndarray:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = LanceDBStore.open(
        str(path), "bench", dim=DIM, index_threshold=rows if index else rows + 1
    )
    for start in range(0, rows, 5000):
        store.upsert(_records(vectors, start, min(rows, start + 5000)))
    if optimize:
        store.optimize()
    store.close()
    return vectors


def measure_writes(workdir: Path, rows: int = 100_000, repeats: int = 3) -> list[dict[str, Any]]:
    """The pipeline's writes on a large table, without and with the scalar indexes."""
    path = workdir / "writes"
    vectors = build(path, rows, index=False, optimize=False)
    store = LanceDBStore.open(
        str(path), "bench", dim=DIM, index_threshold=10**9, scalar_index_threshold=1
    )
    out: list[dict[str, Any]] = []
    for phase in ("no scalar index", "BTREE on id, source"):
        if phase != "no scalar index":
            store.optimize()
        times: dict[str, list[float]] = {
            "upsert 5k (merge)": [],
            "delete(source)": [],
            "ids(source)": [],
        }
        for r in range(repeats):
            base = rows + (r + (repeats if phase != "no scalar index" else 0)) * 2500
            batch = _records(vectors, base - 2500, base + 2500)  # 2,500 existing, 2,500 new
            t0 = time.perf_counter()
            store.upsert(batch)
            times["upsert 5k (merge)"].append(time.perf_counter() - t0)
            source = f"doc{r + (repeats if phase != 'no scalar index' else 0)}.txt"
            t0 = time.perf_counter()
            store.ids(source=source)
            times["ids(source)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.delete(source=source)
            times["delete(source)"].append(time.perf_counter() - t0)
        out += [
            {
                "rows": rows,
                "indexes": phase,
                "operation": op,
                "median_ms": round(statistics.median(ts) * 1000, 1),
            }
            for op, ts in times.items()
        ]
    store.close()
    return out


def measure(rows: int, index: bool, rounds: int, workdir: Path) -> list[dict[str, Any]]:
    path = workdir / f"t{rows}"
    vectors = build(path, rows, index)
    store = LanceDBStore.open(str(path), "bench", mode="r")
    queries = np.random.default_rng(1).standard_normal((rounds, DIM)).astype(np.float32)
    where = {"source": "doc7.txt", "metadata.lang": "en"}
    table = store._table  # the raw LanceDB table, for the public-API baseline

    def numpy_exact(q: np.ndarray) -> object:
        scores = vectors @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    def lancedb_sync(q: np.ndarray) -> object:
        query = table.search(q, vector_column_name="vector").distance_type("cosine")
        if store.has_vector_index():
            query = query.nprobes(store.nprobes).refine_factor(store.refine_factor or 1)
        return query.limit(10).select([*COLUMNS, "_distance"]).to_arrow()

    def open_search_close(q: np.ndarray) -> object:
        with LanceDBStore.open(str(path), "bench", mode="r") as s:
            return s.search(q, 10)

    methods: dict[str, Callable[[np.ndarray], object]] = {
        "numpy": numpy_exact,
        "lancedb-sync": lancedb_sync,
        "store.search": lambda q: store.search(q, 10),
        "store.search+filter": lambda q: store.search(q, 10, where=where),
        "store.range": lambda q: store.range_search(q, 0.05),
        "open+search+close": open_search_close,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        fn(queries[0])  # warm caches and the index
    for q in queries:
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn(q)
            times[name].append((time.perf_counter() - t0) * 1000)
    store.close()
    return [
        {
            "rows": rows,
            "ann_index": index,
            "method": name,
            "median_ms": round(statistics.median(ts), 3),
            "p10_ms": round(float(np.percentile(ts, 10)), 3),
            "p90_ms": round(float(np.percentile(ts, 90)), 3),
        }
        for name, ts in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k rows only, 30 rounds")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    sizes = [(2000, False)] if args.quick else [(2000, False), (20_000, False), (100_000, True)]
    rounds = 30 if args.quick else args.rounds
    results: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vs-lancedb-bench-") as tmp:
        for rows, index in sizes:
            results += measure(rows, index, rounds, Path(tmp))
        if not args.quick:
            writes = measure_writes(Path(tmp))
    print(format_table(results, ["rows", "ann_index", "method", "median_ms", "p10_ms", "p90_ms"]))
    if writes:
        print()
        print(format_table(writes, ["rows", "indexes", "operation", "median_ms"]))
    out = write_json(
        Path(__file__).resolve().parent / "results" / "lancedb_query.json",
        {
            "machine": machine_info(),
            "rounds": rounds,
            "dim": DIM,
            "results": results,
            "writes": writes,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
