"""Time to first token for a reused context: recompute, stored KV + full attention, ContextDB + sparse.

A context of N tokens (standard-library documentation) is prefilled once and stored in a
``ContextDB`` (keys, values and the graph index; the store time is reported apart). A prompt then
extends it by a question of ``--question-tokens`` tokens, and three ways answer it:

- **recompute**: a fresh session prefills context and question (what a server without reuse does);
- **reuse-full**: ``db.create_session`` loads the stored KV of the longest prefix, the question runs
  on it, and decoding attends every key;
- **reuse-sparse**: the same load, with the graph index, and DIPR sparse decoding at α by the
  package's rule (``mode="auto"``: the flat scan below ``graph_min`` keys, the graph above).

Time to first token (TTFT) counts everything from the prompt's ids to the first token's logits
(loading from disk included). Each way then decodes ``--new-tokens`` greedy tokens; their decode
speed and their agreement with recompute's tokens are reported. With ``--question-tokens 1`` the
first token itself comes from a sparse decode step; longer questions run as an exact chunk.

    .venv/bin/python benchmarks/attention/reuse.py --quick                    # smoke: 1K tokens
    .venv/bin/python benchmarks/attention/reuse.py --lengths 2048 4096 8192

Prints a table and writes benchmarks/results/attention_reuse.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = [
    "length",
    "method",
    "alpha",
    "ttft_s",
    "speedup",
    "decode_tok_s",
    "agree",
    "attended",
]


def _greedy(model: Any, session: Any, logits: torch.Tensor, steps: int) -> tuple[list[int], float]:
    """The first token from ``logits``, then ``steps - 1`` more greedy decode steps; tokens/s."""
    tokens = [int(logits.argmax())]
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps - 1):
            out = C.forward(model, torch.tensor([[tokens[-1]]]), session)
            tokens.append(int(out.logits[0, -1].argmax()))
    elapsed = time.perf_counter() - start
    return tokens, (steps - 1) / elapsed if steps > 1 and elapsed > 0 else 0.0


def evaluate_length(
    model: Any,
    ids: list[int],
    length: int,
    alphas: list[float],
    *,
    question_tokens: int = 16,
    new_tokens: int = 16,
    n_init: int = 4,
    n_last: int = 512,
    db_path: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for one context length: recompute, reuse-full, then reuse-sparse per α."""
    context = ids[:length]
    prompt = ids[: length + question_tokens]
    if len(prompt) < length + question_tokens:
        raise ValueError(f"need {length + question_tokens} ids, got {len(ids)}")
    rows: list[dict[str, Any]] = []

    # Recompute: the prompt from scratch (full attention throughout).
    start = time.perf_counter()
    session, logits = C.prefill(model, prompt)
    ttft = time.perf_counter() - start
    truth, tps = _greedy(model, session, logits, new_tokens)
    rows.append(
        {
            "length": length,
            "method": "recompute",
            "alpha": None,
            "ttft_s": ttft,
            "speedup": 1.0,
            "decode_tok_s": tps,
            "agree": 1.0,
            "attended": 1.0,
        }
    )
    recompute_s = ttft

    with tempfile.TemporaryDirectory(dir=db_path) as tmp:
        # Store the context once (prefill with query sampling for the graph, then build + write).
        # The package's default rule, so the graphs are built as ContextDB.store builds them
        # for a default session (layer 0, always scanned, gets none).
        base, _ = C.prefill(model, context, config=C.SparseConfig(n_init=n_init, n_last=n_last))
        db = C.ContextDB(tmp)
        start = time.perf_counter()
        db.store(base)
        store_s = time.perf_counter() - start
        del base

        runs: list[tuple[str, float | None, Any]] = [
            ("reuse-full", None, C.SparseConfig(mode="full"))
        ]
        runs += [
            ("reuse-sparse", a, C.SparseConfig(alpha=a, n_init=n_init, n_last=n_last))
            for a in alphas
        ]
        for method, alpha, cfg in runs:
            start = time.perf_counter()
            session, remaining = db.create_session(prompt, cfg)
            with torch.inference_mode():
                out = C.forward(model, torch.tensor([remaining]), session)
            logits = out.logits[0, -1].float()
            ttft = time.perf_counter() - start
            reused = session.reused_tokens
            tokens, tps = _greedy(model, session, logits, new_tokens)
            stats = session.stats
            rows.append(
                {
                    "length": length,
                    "method": method,
                    "alpha": alpha,
                    "ttft_s": ttft,
                    "speedup": recompute_s / ttft,
                    "decode_tok_s": tps,
                    "agree": sum(a == b for a, b in zip(tokens, truth, strict=True)) / len(truth),
                    "attended": C.mean_fraction(stats) if stats else 1.0,
                    "touched": C.mean_fraction(stats, "touched_fraction") if stats else 1.0,
                    "modes": sorted({layer.mode for s in stats for layer in s.layers}),
                    "reused_tokens": reused,
                    "store_s": store_s,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[2048, 4096, 8192], alphas=[1e-3])
    parser.add_argument("--question-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--db", default=None, help="folder for the temporary ContextDB")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [min(args.lengths[0], 1024)]
        args.new_tokens = min(args.new_tokens, 8)
        args.alphas = args.alphas[:1]
    C.set_threads(args.threads)
    start = time.perf_counter()
    model, tok = C.load_model(args.model)
    load_s = time.perf_counter() - start
    ids = C.text_ids(tok, max(args.lengths) + args.question_tokens)
    rows: list[dict[str, Any]] = []
    for length in args.lengths:
        part = evaluate_length(
            model,
            ids,
            length,
            args.alphas,
            question_tokens=args.question_tokens,
            new_tokens=args.new_tokens,
            n_init=args.n_init,
            n_last=args.n_last,
            db_path=args.db,
        )
        rows += part
        print(C.format_table(part, COLUMNS))
        print(f"store (graph build + write): {part[-1]['store_s']:.2f} s", flush=True)
    path = C.write_result(
        "reuse",
        {
            "benchmark": "attention_reuse",
            "model": args.model,
            "quick": args.quick,
            "question_tokens": args.question_tokens,
            "new_tokens": args.new_tokens,
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
