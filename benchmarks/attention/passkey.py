"""Passkey retrieval at several depths: DIPR sparse decoding against full attention.

A five-digit pass key is hidden at a relative depth of a long filler (standard-library
documentation), and the prompt ends by asking for it ("... What is the pass key? The pass key
is"). Everything but the prompt's last token is prefilled exactly; the last token and the answer
are decode steps, so each method decides every answer token itself. A trial succeeds when the
greedy answer (``--answer-tokens`` tokens) contains the key. Full attention is the yardstick: the
goal is equal accuracy, whatever the small model achieves.

    .venv/bin/python benchmarks/attention/passkey.py --quick                # smoke: 1K, 2 depths
    .venv/bin/python benchmarks/attention/passkey.py --lengths 2048 4096 8192 --trials 3

Prints a table and writes benchmarks/results/attention_passkey.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about the important information there.\n\n"
)
QUESTION = "\n\nWhat is the pass key? The pass key is"
COLUMNS = ["length", "depth", "method", "alpha", "accuracy", "attended"]


def needle(key: str) -> str:
    return f"\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n"


def build_prompt(
    tokenizer: Any, filler: list[int], length: int, depth: float, key: str
) -> list[int]:
    """About ``length`` ids: intro, filler with the needle at ``depth`` (0..1), question."""
    if tokenizer is None:  # tiny random model: digits are ids, the structure is the same
        head, tail = [1, 2, 3], [4, 5, 6]
        pin = [7, *(10 + int(c) for c in key), 8]
    else:
        head, tail = C.encode(tokenizer, INTRO), C.encode(tokenizer, QUESTION)
        pin = C.encode(tokenizer, needle(key))
    room = max(0, length - len(head) - len(tail) - len(pin))
    cut = int(room * depth)
    return [*head, *filler[:cut], *pin, *filler[cut:room], *tail]


def answer_ok(tokenizer: Any, tokens: list[int], key: str) -> bool:
    if tokenizer is None:
        return [10 + int(c) for c in key] == tokens[: len(key)]
    return key in tokenizer.decode(tokens)


def decode(model: Any, session: Any, first: int, steps: int) -> list[int]:
    """Run ``first`` as a decode step, then greedy steps; the ``steps`` answer tokens."""
    out_tokens: list[int] = []
    token = first
    with torch.inference_mode():
        for _ in range(steps):
            logits = C.forward(model, torch.tensor([[token]]), session).logits
            token = int(logits[0, -1].argmax())
            out_tokens.append(token)
    return out_tokens


def evaluate(
    model: Any,
    tokenizer: Any,
    filler: list[int],
    length: int,
    depths: list[float],
    alphas: list[float],
    *,
    trials: int = 1,
    answer_tokens: int = 8,
    n_init: int = 4,
    n_last: int = 512,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary rows per depth and method, one record per trial and method)."""
    rng = random.Random(seed + length)
    methods: list[tuple[str, float | None, Any]] = [("full", None, C.SparseConfig(mode="full"))]
    methods += [
        ("dipr", a, C.SparseConfig(alpha=a, n_init=n_init, n_last=n_last, mode="flat"))
        for a in alphas
    ]
    trials_out: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for depth in depths:
        hits = {i: 0 for i in range(len(methods))}
        attended = {i: 0.0 for i in range(len(methods))}
        for trial in range(trials):
            key = str(rng.randrange(10000, 100000))
            prompt = build_prompt(tokenizer, filler, length, depth, key)
            base, _ = C.prefill(model, prompt[:-1])
            for i, (method, alpha, cfg) in enumerate(methods):
                session = C.fork(base, cfg)
                tokens = decode(model, session, prompt[-1], answer_tokens)
                ok = answer_ok(tokenizer, tokens, key)
                hits[i] += ok
                frac = C.mean_fraction(session.stats) if method != "full" else 1.0
                attended[i] += frac
                text = tokenizer.decode(tokens) if tokenizer is not None else tokens
                trials_out.append(
                    {
                        "length": len(prompt),
                        "depth": depth,
                        "trial": trial,
                        "method": method,
                        "alpha": alpha,
                        "key": key,
                        "answer": text,
                        "ok": ok,
                        "attended": frac,
                    }
                )
        for i, (method, alpha, _) in enumerate(methods):
            rows.append(
                {
                    "length": length,
                    "depth": depth,
                    "method": method,
                    "alpha": alpha,
                    "accuracy": hits[i] / trials,
                    "attended": attended[i] / trials,
                }
            )
    return rows, trials_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[2048, 4096, 8192], alphas=[1e-3, 1e-2])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--trials", type=int, default=2, help="pass keys per depth")
    parser.add_argument("--answer-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [min(args.lengths[0], 1024)]
        args.depths, args.trials = [0.25, 0.75], 1
        args.alphas = args.alphas[:1]
    C.set_threads(args.threads)
    start = time.perf_counter()
    model, tok = C.load_model(args.model)
    load_s = time.perf_counter() - start
    filler = C.text_ids(tok, max(args.lengths))
    rows: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []
    for length in args.lengths:
        part, detail = evaluate(
            model,
            tok,
            filler,
            length,
            args.depths,
            args.alphas,
            trials=args.trials,
            answer_tokens=args.answer_tokens,
            n_init=args.n_init,
            n_last=args.n_last,
        )
        rows += part
        trials += detail
        print(C.format_table(part, COLUMNS), flush=True)
    path = C.write_result(
        "passkey",
        {
            "benchmark": "attention_passkey",
            "model": args.model,
            "quick": args.quick,
            "depths": args.depths,
            "trials_per_depth": args.trials,
            "alphas": args.alphas,
            "load_s": load_s,
            "machine": C.machine(args.threads),
            "rows": rows,
            "trials": trials,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
