"""Graph DIPR on real keys and queries: recall against exact DIPR, keys touched, and baselines.

A context is prefilled exactly (its queries sampled to build graphs), then its continuation is
decoded for ``--queries`` steps under full attention; those decode queries are the test set (the
queries a sparse decode step would ask). For a few layers and every KV head the keys of the
context are indexed four ways:

- **shared**: one ``KeyGraph`` per KV head built from the queries of every query head of its GQA
  group (the package's design);
- **per-head**: one graph per query head, from that head's queries only (g× the graphs);
- **key-only**: ``KeyGraph`` from the keys alone (a pruned L2 k-NN graph: no query knowledge);
- **hnsw**: a key-only HNSW index (faiss ``IndexHNSWFlat``, inner product, M=32) searched for the
  top ``ef`` keys, the DIPR rule applied to what it returns; ``ef`` grows until its recall reaches
  the shared graph's, and the keys it scored there are reported (equal-recall comparison).

Recall is |found ∩ exact| / |exact| for exact DIPR(q, β) over the context's keys (no window seed);
touched is the share of keys scored. Build times are per KV head.

    .venv/bin/python benchmarks/attention/graph.py --quick                  # smoke: 1K tokens
    .venv/bin/python benchmarks/attention/graph.py --lengths 2048 4096 8192

Prints a table and writes benchmarks/results/attention_graph.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = [
    "length",
    "layer",
    "alpha",
    "method",
    "recall",
    "touched",
    "selected",
    "build_s",
    "ef",
]


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    if exact.size == 0:
        return 1.0
    return float(np.intersect1d(found, exact).size / exact.size)


def _hnsw_at_recall(
    keys: np.ndarray,
    queries: np.ndarray,
    exacts: list[np.ndarray],
    beta: float,
    target: float,
) -> dict[str, Any]:
    """Smallest ef (doubling from 16) whose DIPR recall reaches ``target``; its cost there."""
    try:
        import faiss
    except ImportError:
        return {"method": "hnsw", "error": "faiss is not installed (pip install faiss-cpu)"}
    faiss.omp_set_num_threads(1)
    n, d = keys.shape
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(keys, dtype=np.float32))
    build_s = time.perf_counter() - start
    ef = 16
    while True:
        k = min(ef, n)
        index.hnsw.efSearch = max(ef, k)
        faiss.cvar.hnsw_stats.reset()
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        touched = faiss.cvar.hnsw_stats.ndis / len(queries)
        recalls = []
        for row_s, row_i, exact in zip(scores, ids, exacts, strict=True):
            ok = row_i >= 0
            best = float(row_s[ok].max()) if ok.any() else -math.inf
            recalls.append(_recall(row_i[ok & (row_s >= best - beta)], exact))
        recall = float(np.mean(recalls))
        if recall >= target or k >= n:
            return {
                "method": "hnsw",
                "recall": recall,
                "touched": min(1.0, touched / n),
                "build_s": build_s,
                "ef": ef,
            }
        ef *= 2


def evaluate_length(
    model: Any,
    ids: list[int],
    length: int,
    alphas: list[float],
    *,
    layers: list[int] | None = None,
    queries: int = 32,
    capacity: int = 128,
) -> list[dict[str, Any]]:
    """Rows per (layer, α, method), averaged over KV heads, query heads and test queries."""
    context, cont = ids[:length], ids[length : length + queries]
    base, _ = C.prefill(model, context, max_queries=2048)
    probe = C.fork(base, C.SparseConfig(mode="full", max_queries=max(1, len(cont))))
    C.teacher_forced(model, probe, cont)
    kv = base.kv()
    n_layers = len(kv)
    chosen = layers or sorted({1, n_layers // 2, n_layers - 1} & set(range(n_layers)))
    rows: list[dict[str, Any]] = []
    for layer in chosen:
        keys_all = kv[layer][0].float().numpy()  # (H_kv, n, d)
        build_q = base.sampled_queries(layer)  # (H_q, m, d)
        test_q = probe.sampled_queries(layer)  # (H_q, T, d)
        assert build_q is not None and test_q is not None
        h_kv, _, d = keys_all.shape
        g = build_q.shape[0] // h_kv
        scaling = d**-0.5
        acc: dict[tuple[float, str], dict[str, list[float]]] = {}
        builds: dict[str, float] = {"shared": 0.0, "per-head": 0.0, "key-only": 0.0}
        for h in range(h_kv):
            keys = keys_all[h]
            start = time.perf_counter()
            shared = C.KeyGraph.build(keys, build_q[h * g : (h + 1) * g].reshape(-1, d))
            builds["shared"] += time.perf_counter() - start
            start = time.perf_counter()
            own = [C.KeyGraph.build(keys, build_q[h * g + j]) for j in range(g)]
            builds["per-head"] += time.perf_counter() - start
            start = time.perf_counter()
            bare = C.KeyGraph.build(keys)
            builds["key-only"] += time.perf_counter() - start
            for alpha in alphas:
                beta = C.SparseConfig(alpha=alpha).beta(d, scaling)
                qs = test_q[h * g : (h + 1) * g]  # (g, T, d)
                exacts = [C.dipr(q, keys, beta) for q in qs.reshape(-1, d)]
                for j in range(g):
                    graphs = {"shared": shared, "per-head": own[j], "key-only": bare}
                    for name, graph in graphs.items():
                        cell = acc.setdefault((alpha, name), {})
                        for t in range(qs.shape[1]):
                            res = graph.search(keys, qs[j, t], beta, capacity=capacity)
                            cell.setdefault("recall", []).append(
                                _recall(res.indices, exacts[j * qs.shape[1] + t])
                            )
                            cell.setdefault("touched", []).append(res.touched / len(keys))
                            cell.setdefault("selected", []).append(
                                exacts[j * qs.shape[1] + t].size / len(keys)
                            )
                nq = qs.shape[0] * qs.shape[1]  # this KV head's test queries, the latest rows
                target = float(np.mean(acc[(alpha, "shared")]["recall"][-nq:]))
                hn = _hnsw_at_recall(keys, qs.reshape(-1, d), exacts, beta, target)
                cell = acc.setdefault((alpha, "hnsw"), {})
                for key in ("recall", "touched", "build_s", "ef"):
                    if key in hn:
                        cell.setdefault(key, []).append(float(hn[key]))
                if "error" in hn:
                    cell["error"] = [0.0]
        for (alpha, name), cell in acc.items():
            row: dict[str, Any] = {
                "length": length,
                "layer": layer,
                "alpha": alpha,
                "method": name,
                "recall": float(np.mean(cell["recall"])) if cell.get("recall") else None,
                "touched": float(np.mean(cell["touched"])) if cell.get("touched") else None,
                "selected": float(np.mean(cell["selected"])) if cell.get("selected") else None,
                "build_s": builds[name] / h_kv if name in builds else None,
                "ef": float(np.max(cell["ef"])) if cell.get("ef") else None,
                "queries": len(cont) * g * h_kv,
            }
            if name == "hnsw" and cell.get("build_s"):
                row["build_s"] = float(np.mean(cell["build_s"]))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[2048, 4096, 8192], alphas=[1e-3, 1e-2])
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--queries", type=int, default=32, help="decode steps whose queries test")
    parser.add_argument("--capacity", type=int, default=128)
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [min(args.lengths[0], 1024)]
        args.queries = min(args.queries, 8)
        args.alphas = args.alphas[:1]
    C.set_threads(args.threads)
    start = time.perf_counter()
    model, tok = C.load_model(args.model)
    load_s = time.perf_counter() - start
    ids = C.text_ids(tok, max(args.lengths) + args.queries)
    rows: list[dict[str, Any]] = []
    for length in args.lengths:
        part = evaluate_length(
            model,
            ids,
            length,
            args.alphas,
            layers=args.layers,
            queries=args.queries,
            capacity=args.capacity,
        )
        rows += part
        print(C.format_table(part, COLUMNS), flush=True)
    path = C.write_result(
        "graph",
        {
            "benchmark": "attention_graph",
            "model": args.model,
            "quick": args.quick,
            "queries": args.queries,
            "capacity": args.capacity,
            "alphas": args.alphas,
            "load_s": load_s,
            "machine": C.machine(args.threads),
            "rows": rows,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
