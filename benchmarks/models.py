"""Model throughput: ONNX Runtime fp32 and int8, torch, and sentence-transformers on the same texts.

Each system embeds the same generated corpus (mixed lengths, 10-160 words, as a chunker produces)
with and without length sorting, the systems alternating within each round:

- ``sorted``: vectorstream's path: tokenise, sort by token count, token-budget batches.
- ``unsorted``: batches of 32 in input order, each padded to its longest text.
- sentence-transformers always sorts by character length inside ``encode`` (batch_size 32); it is
  reported once, as the reference implementation a user would otherwise run.

tokens/s counts real tokens (special tokens included, after truncation), not padding, per wall
second; tokens/cpu-s per CPU second of this process (steadier on a shared machine). ``vs_st`` and
``vs_st_cpu`` are the ratios to sentence-transformers.

    .venv/bin/python benchmarks/models.py                 # 256 texts, 3 rounds
    .venv/bin/python benchmarks/models.py --texts 64 --repeats 1   # quick check of the harness

Prints a table and writes benchmarks/results/models.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import format_table, machine_info, write_json  # noqa: E402
from vectorstream.models import Embedder, load_model, resolve_model  # noqa: E402
from vectorstream.models._checkset import sentence  # noqa: E402
from vectorstream.models._pooling import l2_normalize, pool  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
UNSORTED_BATCH = 32


def corpus(n: int, seed: int = 99) -> list[str]:
    """``n`` texts of 10-160 words, in random order (as chunks of many documents arrive)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target = rng.randint(10, 160)
        words: list[str] = []
        while len(words) < target:
            words += sentence(rng).split()
        texts.append(" ".join(words[:target]))
    return texts


def embed_unsorted(model: Embedder, texts: list[str]) -> np.ndarray:
    """Fixed batches in input order, each padded to its longest: the naive baseline."""
    encodings = model.tokenize(texts)
    out = []
    for start in range(0, len(encodings), UNSORTED_BATCH):
        batch = encodings[start : start + UNSORTED_BATCH]
        width = max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(batch):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        states = model.backend_impl.run(ids, mask, np.zeros_like(ids))
        out.append(pool(states, mask, model.folder.pooling))
    return l2_normalize(np.vstack(out))


def padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def run_rounds(
    cases: dict[tuple[str, str], Callable[[], np.ndarray]], repeats: int
) -> dict[tuple[str, str], tuple[float, float, np.ndarray]]:
    """Median wall and CPU seconds (all threads of this process) of each case, and its vectors.

    Cases alternate within each round (A B C ... A B C ...), so a burst of load from other
    processes on the shared machine hits every case alike instead of one case's whole run.
    CPU seconds are the steadier figure there: others stretch a run's wall time, not its work.
    """
    walls: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    cpus: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for key, fn in cases.items():
        vectors[key] = fn()  # warm-up: the first run allocates arenas and caches
    for _ in range(repeats):
        for key, fn in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            walls[key].append(time.perf_counter() - start)
            cpus[key].append(time.process_time() - start_cpu)
    return {
        key: (statistics.median(walls[key]), statistics.median(cpus[key]), vectors[key])
        for key in cases
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    parser.add_argument("--out", default=str(HERE / "results" / "models.json"))
    args = parser.parse_args()

    texts = corpus(args.texts)
    with tempfile.TemporaryDirectory(prefix="vs-bench-models-") as cache:
        # A private cache: the export and int8 gate are part of set-up, not of the timings.
        models = {
            "ort-fp32": load_model(MODEL, backend="onnx", threads=args.threads, cache_dir=cache),
            "ort-int8": load_model(MODEL, quantized=True, threads=args.threads, cache_dir=cache),
            "torch": load_model(MODEL, backend="torch", threads=args.threads, cache_dir=cache),
        }
        reference_model = models["ort-fp32"]
        lengths = [len(e.ids) for e in reference_model.tokenize(texts)]
        real_tokens = sum(lengths)
        from vectorstream.models import token_budget_batches

        sorted_padded = padded_tokens(
            lengths, list(token_budget_batches(lengths, reference_model.token_budget))
        )
        unsorted_padded = padded_tokens(
            lengths,
            [
                list(range(s, min(s + UNSORTED_BATCH, len(lengths))))
                for s in range(0, len(lengths), UNSORTED_BATCH)
            ],
        )

        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(resolve_model(MODEL).path), device="cpu")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        cases: dict[tuple[str, str], Callable[[], np.ndarray]] = {}
        for name, model in models.items():
            cases[(name, "sorted")] = lambda m=model: m.embed(texts)
            cases[(name, "unsorted")] = lambda m=model: embed_unsorted(m, texts)
        cases[("sentence-transformers", "by characters (built in)")] = lambda: st.encode(
            texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False
        )
        results = run_rounds(cases, args.repeats)

    baseline = results[("ort-fp32", "sorted")][2]
    padded = {"sorted": sorted_padded, "unsorted": unsorted_padded}
    rows: list[dict[str, Any]] = []
    for (name, ordering), (seconds, cpu_seconds, vectors) in results.items():
        rows.append(
            {
                "system": name,
                "ordering": ordering,
                "seconds": seconds,
                "texts_per_s": len(texts) / seconds,
                "tokens_per_s": real_tokens / seconds,
                "tokens_per_cpu_s": real_tokens / cpu_seconds,
                "padding_pct": (
                    100 * (1 - real_tokens / padded[ordering]) if ordering in padded else None
                ),
                "min_cosine_to_ort_fp32": float((vectors * baseline).sum(1).min()),
            }
        )
    st_rate, st_cpu_rate = rows[-1]["tokens_per_s"], rows[-1]["tokens_per_cpu_s"]
    for row in rows:
        row["vs_st"] = row["tokens_per_s"] / st_rate
        row["vs_st_cpu"] = row["tokens_per_cpu_s"] / st_cpu_rate
    columns = [
        "system",
        "ordering",
        "tokens_per_s",
        "tokens_per_cpu_s",
        "texts_per_s",
        "padding_pct",
        "vs_st",
        "vs_st_cpu",
        "min_cosine_to_ort_fp32",
    ]
    print(format_table(rows, columns))
    result = {
        "benchmark": "models",
        "model": MODEL,
        "texts": len(texts),
        "real_tokens": real_tokens,
        "repeats": args.repeats,
        "threads": models["ort-fp32"].backend_impl.threads,  # type: ignore[attr-defined]
        "token_budget": reference_model.token_budget,
        "machine": machine_info(),
        "rows": rows,
    }
    path = write_json(args.out, result)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
