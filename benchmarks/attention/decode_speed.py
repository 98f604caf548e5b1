"""Decode speed of a real model over a long context: full attention, DIPR by flat scan, DIPR by graph.

One exact prefill (sampling queries for the graphs), the graph index of every layer but the flat
ones built from it, then each method decodes the text's own continuation teacher-forced, after a
few warm-up steps (buffers, the compiled graph search's first call). Full attention runs first and
last so the table shows the machine's drift. Reported per method: tokens/s, the share of keys
attended and scored, and top-1 agreement with full attention over the timed steps.

    .venv/bin/python benchmarks/attention/decode_speed.py --lengths 8192 --threads 1
    .venv/bin/python benchmarks/attention/decode_speed.py --model tiny --quick

Prints a table and writes benchmarks/results/attention_decode_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = ["length", "method", "alpha", "tok_s", "attended", "touched", "top1", "steps"]


def evaluate_length(
    model: Any,
    ids: list[int],
    length: int,
    steps: int,
    alpha: float,
    *,
    n_init: int = 4,
    n_last: int = 512,
    warmup: int = 8,
) -> list[dict[str, Any]]:
    """Rows for one context length: full, flat, graph, full again."""
    context, feed = ids[:length], ids[length : length + warmup + steps]
    if len(feed) < warmup + steps:
        raise ValueError(f"need {length + warmup + steps} ids, got {len(ids)}")
    start = time.perf_counter()
    base, _ = C.prefill(model, context, max_queries=2048)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    base.install_graphs(base.build_graphs(), length)
    build_s = time.perf_counter() - start
    window = {"n_init": n_init, "n_last": n_last, "max_queries": 0}
    full = C.SparseConfig(mode="full", **window)
    methods = [
        ("full", None, full),
        ("flat", alpha, C.SparseConfig(alpha=alpha, mode="flat", **window)),
        # The package's rule with the index always eligible: layer 0 scanned, the rest graph.
        ("graph", alpha, C.SparseConfig(alpha=alpha, full_below=0, graph_min=0, **window)),
        ("full", None, full),
    ]
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for method, a, cfg in methods:
        session = C.fork(base, cfg)
        C.teacher_forced(model, session, feed[:warmup])
        start = time.perf_counter()
        logits = C.teacher_forced(model, session, feed[warmup:])
        elapsed = time.perf_counter() - start
        if reference is None:
            reference = logits
        stats = session.stats[warmup:]
        rows.append(
            {
                "length": length,
                "method": method,
                "alpha": a,
                "tok_s": steps / elapsed,
                "attended": C.mean_fraction(stats),
                "touched": C.mean_fraction(stats, "touched_fraction"),
                "top1": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
                "steps": steps,
                "prefill_s": prefill_s,
                "graph_build_s": build_s,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[8192], alphas=[1e-3])
    parser.add_argument("--steps", type=int, default=40, help="timed decode steps per method")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.steps = [min(args.lengths[0], 1024)], min(args.steps, 4)
    C.set_threads(args.threads)
    model, tok = C.load_model(args.model)
    ids = C.text_ids(tok, max(args.lengths) + args.steps + 8)
    rows: list[dict[str, Any]] = []
    for length in args.lengths:
        rows += evaluate_length(
            model, ids, length, args.steps, args.alphas[0], n_init=args.n_init, n_last=args.n_last
        )
        print(C.format_table([r for r in rows if r["length"] == length], COLUMNS), flush=True)
    path = C.write_result(
        "decode_speed",
        {
            "benchmark": "attention_decode_speed",
            "model": args.model,
            "quick": args.quick,
            "alpha": args.alphas[0],
            "n_init": args.n_init,
            "n_last": args.n_last,
            "machine": C.machine(args.threads),
            "rows": rows,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
