"""The HTTP service under load: micro-batched embeddings, highlights (cold and cached), search.

    .venv/bin/python benchmarks/serve.py            # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --quick    # a few seconds per figure: proves the harness

What it measures, against ``vectorstream serve`` in its own process on a free loopback port:

1. Short inputs (one sentence of 8–16 words per request) at concurrency 1, 8, 32 and 64: requests/s,
   p50 and p99 latency, and requests/s as a fraction of the model's own batch throughput (the same
   kind of sentences through ``embedder.embed`` in batches of 64, in this process, server idle;
   timed before and after the load levels, the faster run counts).
2. Highlights of 10 documents × 20 KB in one request: the first request (everything chunked and
   embedded) and a repeat (chunk vectors cached), each against the model time for those chunks
   (the median of 3 rounds on fresh documents, each timed beside the model alone on its chunks).
3. Search p50 (top 10 of a 2,000-record LanceDB collection) against the time to embed the query in
   this process, the two timed alternately (50 pairs).

The load generator (asyncio + httpx) runs on the same 2 cores as the server: its own CPU use is
part of what the figures include. Texts are generated from word lists at run time.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import format_table, machine_info, write_json
from _server_support import MODEL_DIR, serve_process

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"

_NOUNS = (
    "river mountain engine garden library network window compiler harbour forest protein "
    "satellite market orchestra glacier bridge vaccine algorithm castle desert battery "
    "telescope recipe language tournament volcano archive factory theorem island"
)
NOUNS = _NOUNS.split()
_VERBS = "builds measures crosses feeds hides powers explains follows carries protects"
VERBS = _VERBS.split()
_ADJECTIVES = "old quiet rapid bright hidden fragile ancient modern distant tiny"
ADJECTIVES = _ADJECTIVES.split()


def sentence(rng: random.Random, words: int) -> str:
    out = []
    while len(out) < words:
        out += [
            rng.choice(ADJECTIVES),
            rng.choice(NOUNS),
            rng.choice(VERBS),
            "the",
            rng.choice(NOUNS),
        ]
    text = " ".join(out[:words])
    return text[0].upper() + text[1:] + "."


def document(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        s = sentence(rng, rng.randint(8, 24))
        parts.append(s + ("\n\n" if rng.random() < 0.15 else " "))
        total += len(parts[-1])
    return "".join(parts)[:size]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


async def load(
    base: str, concurrency: int, seconds: float, rng: random.Random, pid: int | None = None
) -> dict[str, Any]:
    texts = [sentence(rng, rng.randint(8, 16)) for _ in range(4096)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    samples: list[int] = []
    # aiohttp costs the client far less CPU per request than httpx; on 2 shared cores every
    # cycle the load generator spends is taken from the server.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        async with session.post("/v1/embeddings", json={"input": "warm up"}) as r:
            await r.read()

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(
                    "/v1/embeddings", json={"input": texts[i % len(texts)]}
                ) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                i += concurrency

        async def sample() -> None:
            # Server RSS once a second: a soak run must show no growth.
            while pid is not None and time.perf_counter() < deadline:
                samples.append(rss(pid))
                await asyncio.sleep(1.0)

        started = time.perf_counter()
        await asyncio.gather(sample(), *(worker(j) for j in range(concurrency)))
        elapsed = time.perf_counter() - started
    memory: dict[str, Any] = {}
    if samples:
        tenth = max(1, len(samples) // 10)
        memory = {
            "rss_first_mib": statistics.mean(samples[:tenth]) / 2**20,
            "rss_last_mib": statistics.mean(samples[-tenth:]) / 2**20,
            "rss_max_mib": max(samples) / 2**20,
            # One sample every 10 s: growth that levels off (allocator arenas warming up) is not
            # a leak; growth that goes on is.
            "rss_trace_mib": [round(v / 2**20, 1) for v in samples[::10]],
        }
    return {
        **memory,
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * pct(latencies, 0.99),
    }


def model_throughput(model: Any, rng: random.Random, seconds: float) -> float:
    texts = [sentence(rng, rng.randint(8, 16)) for _ in range(64)]
    model.embed(texts)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.embed(texts)
        done += len(texts)
    return done / (time.perf_counter() - started)


def build_search_store(uri: str, model: Any, rng: random.Random, n: int) -> None:
    from vectorstream.stores import open_store
    from vectorstream.types import Embedding, Record

    texts = [sentence(rng, rng.randint(10, 30)) for _ in range(n)]
    vectors = model.embed(texts)
    store = open_store(uri, "bench", dim=model.dim)
    try:
        store.upsert(
            [
                Record(
                    id=f"r{i}",
                    embedding=Embedding(dense=v),
                    text=t,
                    source=f"doc-{i // 10}",
                    chunk_index=i % 10,
                    start=0,
                    end=len(t),
                    model=model.model_id,
                )
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ]
        )
        store.flush()
    finally:
        store.close()


def median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs: check the harness, not the figures"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load level")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        help="then run concurrency 64 this many seconds, sampling RSS",
    )
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    rng = random.Random(7)

    from vectorstream.chunking import ChunkOptions, make_chunker
    from vectorstream.models import load_model
    from vectorstream.types import Section

    model = load_model(str(MODEL_DIR))
    before = model_throughput(model, rng, seconds)

    # The chunks the highlights route will make of the documents (its default options), timed
    # through the model alone: what "the model time for their chunks" means.
    options = ChunkOptions(splitter="sentences", chunk_tokens=128, overlap=0)
    chunker = make_chunker(
        options, model.tokenizer, model.max_tokens, num_special_tokens=model.num_special_tokens
    )

    def chunks_of(docs: list[str]) -> list[str]:
        return [
            c.text
            for i, d in enumerate(docs)
            for c in chunker.chunk([Section(text=d, source=str(i))])
        ]

    with tempfile.TemporaryDirectory(prefix="vectorstream-bench-") as folder:
        uri = f"lancedb://{folder}"
        build_search_store(uri, model, rng, 300 if args.quick else 2000)
        cli = [
            "--model",
            str(MODEL_DIR),
            "--store",
            uri,
            "--collection",
            "bench",
            "--log-level",
            "warning",
        ]
        with serve_process(cli) as (base, process):
            levels = [asyncio.run(load(base, c, seconds, rng, process.pid)) for c in (1, 8, 32, 64)]
            # The model alone again, now beside the idle server; the faster of the two runs is the
            # yardstick (on a shared machine, the conservative choice).
            after = model_throughput(model, rng, seconds)
            baseline = max(before, after)
            for row in levels:
                row["vs_model"] = row["requests_per_s"] / baseline

            with httpx.Client(base_url=base, timeout=600) as client:
                # Side by side, on fresh documents each round (a first request must find nothing
                # cached): the model alone on their chunks in this process, then the request.
                rounds = []
                for _ in range(1 if args.quick else 3):
                    docs = [document(rng, 20_000) for _ in range(10)]
                    chunk_texts = chunks_of(docs)
                    started = time.perf_counter()
                    model.embed(chunk_texts)
                    model_s = time.perf_counter() - started
                    body = {
                        "query": "which ancient engine powers the harbour",
                        "documents": [{"id": str(i), "text": d} for i, d in enumerate(docs)],
                    }
                    started = time.perf_counter()
                    first = client.post("/v1/highlights", json=body)
                    first_s = time.perf_counter() - started
                    first.raise_for_status()
                    served = sum(d["chunks"] for d in first.json()["data"])
                    rounds.append((first_s / model_s, first_s, model_s, served, len(chunk_texts)))
                rounds.sort()
                ratio, first_s, model_chunks_s, served_chunks, timed_chunks = rounds[
                    len(rounds) // 2
                ]
                cached_s = median_seconds(
                    lambda: client.post(
                        "/v1/highlights", json=dict(body, query="a tiny battery")
                    ).raise_for_status(),
                    5,
                )

                query = {"query": "where is the hidden castle", "k": 10}
                client.post("/v1/search", json=query).raise_for_status()
                # Side by side: each search request alternates with embedding the same query
                # in this process, so both see the same machine state.
                searches: list[float] = []
                embeds: list[float] = []
                for _ in range(5 if args.quick else 50):
                    started = time.perf_counter()
                    model.embed([query["query"]])
                    embeds.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    client.post("/v1/search", json=query).raise_for_status()
                    searches.append(time.perf_counter() - started)
                search_s = statistics.median(searches)
                query_embed_s = statistics.median(embeds)
                metrics = client.get("/metrics").text
            soak = asyncio.run(load(base, 64, args.soak, rng, process.pid)) if args.soak else None
    batches = [
        line
        for line in metrics.splitlines()
        if line.startswith(("vectorstream_batch_inputs_sum", "vectorstream_batch_inputs_count"))
    ]

    highlights = {
        "documents": len(docs),
        "bytes_per_document": 20_000,
        "chunks": served_chunks,
        "chunks_timed_through_model": timed_chunks,
        "model_s": model_chunks_s,
        "first_s": first_s,
        "first_vs_model": ratio,
        "rounds": [r[0] for r in rounds],
        "cached_s": cached_s,
        "cached_vs_model": cached_s / model_chunks_s,
    }
    search = {
        "records": 300 if args.quick else 2000,
        "p50_ms": 1000 * search_s,
        "query_embed_ms": 1000 * query_embed_s,
        "vs_embed": search_s / query_embed_s,
    }
    result = {
        "machine": machine_info(),
        "quick": args.quick,
        "seconds_per_level": seconds,
        "model": str(MODEL_DIR),
        "model_batch_inputs_per_s": baseline,
        "model_batch_inputs_per_s_runs": [before, after],
        "embeddings": levels,
        "batcher": batches,
        "highlights": highlights,
        "search": search,
        "soak": soak,
        "load_average_at_end": os.getloadavg(),
        "goals": {
            "embeddings_at_32_vs_model": ">= 0.8",
            "highlights_first_vs_model": "<= 1.2",
            "highlights_cached_vs_model": "<= 0.2",
            "search_p50_vs_query_embed": "<= 2",
        },
    }
    print(f"model alone: {baseline:,.0f} short inputs/s (batches of 64)\n")
    print(
        format_table(
            levels,
            ["concurrency", "requests", "errors", "requests_per_s", "p50_ms", "p99_ms", "vs_model"],
        )
    )
    print()
    print(
        format_table(
            [highlights],
            [
                "documents",
                "chunks",
                "model_s",
                "first_s",
                "first_vs_model",
                "cached_s",
                "cached_vs_model",
            ],
        )
    )
    print()
    print(format_table([search], ["records", "p50_ms", "query_embed_ms", "vs_embed"]))
    if soak:
        print()
        print(
            format_table(
                [soak],
                [
                    "concurrency",
                    "requests",
                    "errors",
                    "requests_per_s",
                    "p99_ms",
                    "rss_first_mib",
                    "rss_last_mib",
                    "rss_max_mib",
                ],
            )
        )
    print(
        f"\nload average at the end: {os.getloadavg()} (other work on the machine skews every figure)"
    )
    print(f"\nwrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
