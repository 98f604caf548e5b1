"""Time per query of graph DIPR: the numpy search, the compiled one, and the flat scan, side by side.

Synthetic but structured keys (d = 64): Gaussian clusters around a common offset, like the keys of
an attention head; queries from a shifted distribution (out of distribution for the keys, as decode
queries are). Each ``KeyGraph`` is built from ``--build-queries`` sample queries; the test queries
come in groups of ``--group`` (the query heads of one KV head, 3 for SmolLM2). Each query is seeded
with the best score of a window (the first 4 and last 512 keys), as a decode step seeds it.

Per query, single thread (numpy's BLAS limited to one thread, numba kernels are serial), in CPU
microseconds of the thread (best of ``--repeat`` passes):

- **numpy**: ``KeyGraph.search_numpy`` (the reference);
- **compiled**: ``KeyGraph.search`` (numba), one call per query;
- **many**: ``KeyGraph.search_many``, one call per group, time divided by the group size;
- **flat**: one matrix-vector product over every key and the threshold. (One matrix product for
  a whole group is slower per query with numpy's BLAS at these shapes.)

Recall is the compiled search's against the flat scan (same threshold); ``touched`` is the share
of keys scored; ``agree`` the share of queries on which the compiled and numpy searches return the
same positions after scoring the same number of keys. The first compiled call (JIT compile into an empty numba cache, and loading from
the cache) is timed in fresh processes.

    .venv/bin/python benchmarks/attention/graph_speed.py                     # 8K, 32K, 128K
    .venv/bin/python benchmarks/attention/graph_speed.py --sizes 4096 --queries 12
    .venv/bin/python benchmarks/attention/graph_speed.py --cache /tmp/graphs    # reuse builds

Prints a table and writes benchmarks/results/attention_graph_speed.json.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from vectorstream.attention import KeyGraph, beta_from_alpha
from vectorstream.attention import _graph_jit as jit

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = [
    "n",
    "selected",
    "touched",
    "recall",
    "agree",
    "numpy_us",
    "compiled_us",
    "many_us",
    "flat_us",
    "speedup",
    "build_s",
]
WINDOW = (4, 512)


def make_data(
    n: int, m: int, t: int, d: int = 64, clusters: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys (n, d) from ``clusters`` Gaussians; build queries (m, d) and test queries (t, d)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 2.0
    keys = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d)) + rng.normal(size=d) * 2
    shift = rng.normal(size=d) * 2

    def queries(count: int) -> np.ndarray:
        picks = centres[rng.integers(0, clusters, count)]
        return (picks * 0.7 + rng.normal(size=(count, d)) + shift).astype(np.float32)

    return keys.astype(np.float32), queries(m), queries(t)


def _per_query_us(func: Any, items: list[Any], repeat: int) -> float:
    """Best of ``repeat`` passes over ``items`` (one ``func`` call each), microseconds per item.

    CPU time of this thread, not wall time: every method runs on this one thread (BLAS limited to
    it), and on a shared machine the time others hold the core would otherwise be counted.
    """
    best = math.inf
    for _ in range(repeat):
        start = time.thread_time()
        for item in items:
            func(item)
        best = min(best, time.thread_time() - start)
    return best / len(items) * 1e6


def measure(
    n: int,
    *,
    build_queries: int,
    queries: int,
    group: int,
    alpha: float,
    repeat: int,
    cache: Path | None = None,
) -> dict[str, Any]:
    keys, train, test = make_data(n, build_queries, queries)
    d = keys.shape[1]
    beta = beta_from_alpha(alpha, d)
    cached = None if cache is None else cache / f"graph_speed_{n}_{build_queries}.npz"
    build_s: float | None = None
    if cached is not None and cached.exists():
        with np.load(cached) as data:
            graph = KeyGraph(data["neighbors"], data["entries"])
    else:
        start = time.perf_counter()
        graph = KeyGraph.build(keys, train)
        build_s = time.perf_counter() - start
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, neighbors=graph.neighbors, entries=graph.entries)
    head, last = WINDOW
    window = np.concatenate([keys[:head], keys[n - last :]])
    seeds = (test @ window.T).max(axis=1).astype(np.float64)
    singles = list(zip(test, seeds.tolist(), strict=True))
    groups = [(test[i : i + group], seeds[i : i + group]) for i in range(0, len(test), group)]

    def numpy_search(item: tuple[np.ndarray, float]) -> Any:
        return graph.search_numpy(keys, item[0], beta, seed_score=item[1])

    def compiled_search(item: tuple[np.ndarray, float]) -> Any:
        return graph.search(keys, item[0], beta, seed_score=item[1])

    def many_search(item: tuple[np.ndarray, np.ndarray]) -> Any:
        return graph.search_many(keys, item[0], beta, seed_scores=item[1])

    def flat_scan(item: tuple[np.ndarray, float]) -> np.ndarray:
        scores = keys @ item[0]
        return np.flatnonzero(scores >= max(float(scores.max()), item[1]) - beta)

    compiled_search(singles[0])  # compile (or load from numba's cache) outside the timings
    recalls, touched, selected, agree = [], [], [], []
    for item in singles:
        exact = flat_scan(item)
        res = compiled_search(item)
        ref = numpy_search(item)
        agree.append(np.array_equal(res.indices, ref.indices) and res.touched == ref.touched)
        recalls.append(np.intersect1d(res.indices, exact).size / max(1, exact.size))
        touched.append(res.touched / n)
        selected.append(exact.size / n)
    times = {
        "numpy_us": _per_query_us(numpy_search, singles, repeat),
        "compiled_us": _per_query_us(compiled_search, singles, repeat),
        "many_us": _per_query_us(many_search, groups, repeat) / group,
        "flat_us": _per_query_us(flat_scan, singles, repeat),
    }
    return {
        "n": n,
        "selected": float(np.mean(selected)),
        "touched": float(np.mean(touched)),
        "recall": float(np.mean(recalls)),
        "agree": float(np.mean(agree)),
        **times,
        "speedup": times["numpy_us"] / times["many_us"],
        "build_s": build_s,
    }


_FIRST_CALL = """
import time, numpy as np
from vectorstream.attention import KeyGraph
rng = np.random.default_rng(0)
keys = rng.normal(size=(200, 64)).astype(np.float32)
graph = KeyGraph.build(keys, keys[:50])
start = time.perf_counter()
graph.search(keys, keys[0], 5.0)
print(time.perf_counter() - start)
"""


def first_call_seconds() -> dict[str, float]:
    """Seconds of the first compiled search in a fresh process: into an empty cache, then cached."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name in ("compile_s", "cached_s"):
            run = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
            )
            run.check_returncode()
            out[name] = float(run.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--build-queries", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=48, help="test queries per size")
    parser.add_argument("--group", type=int, default=3, help="query heads per KV head")
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best kept)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep built graphs here (build_s then blank)"
    )
    args = parser.parse_args(argv)
    if not jit.AVAILABLE:
        sys.exit("numba is not installed (pip install 'vectorstream[attention]')")
    first = first_call_seconds()
    print(
        f"first compiled call: {first['compile_s']:.2f} s compiling, {first['cached_s']:.2f} s cached"
    )
    rows = []
    with threadpool_limits(1):
        for n in args.sizes:
            rows.append(
                measure(
                    n,
                    build_queries=args.build_queries,
                    queries=args.queries,
                    group=args.group,
                    alpha=args.alpha,
                    repeat=args.repeat,
                    cache=args.cache,
                )
            )
            print(C.format_table(rows[-1:], COLUMNS), flush=True)
    print(C.format_table(rows, COLUMNS))
    payload = {
        "benchmark": "attention_graph_speed",
        "alpha": args.alpha,
        "beta": beta_from_alpha(args.alpha, 64),
        "build_queries": args.build_queries,
        "queries": args.queries,
        "group": args.group,
        "first_call": first,
        "machine": C.machine(1),
        "rows": rows,
    }
    print(f"wrote {C.write_result('graph_speed', payload, args.out)}")


if __name__ == "__main__":
    main()
