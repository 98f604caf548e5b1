"""Per-layer α for a key budget: each layer's cost (keys attended, KL) at each α, and the allocation.

``vectorstream.attention.measure_layer_costs`` runs one layer sparse at a time (every other layer
exact) over the last ``--steps`` tokens of each calibration text, at each ``--alphas`` value; then
``allocate_alpha`` picks, for each ``--budgets`` value (mean share of keys attended, window
included), the α per layer with the least summed KL. Calibration texts are corpus seeds
(``--texts``, default 10 and 11) other than the ones ``quality.py`` evaluates on (0–3), so the
evaluation is on held-out text:

    .venv/bin/python benchmarks/attention/calibrate.py --lengths 8192 --budgets 0.09 0.095 0.1
    .venv/bin/python benchmarks/attention/quality.py --lengths 8192 --steps 512 --texts 0 1 2 3 \\
        --calibrated benchmarks/results/attention_calibrate.json --alphas 1e-3 --no-baselines

Prints the per-layer table and each budget's choice; writes benchmarks/results/attention_calibrate.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from vectorstream.attention import SparseConfig, allocate_alpha, measure_layer_costs
from vectorstream.errors import ConfigError

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C


def run(
    model: Any,
    texts: list[list[int]],
    *,
    steps: int,
    alphas: list[float],
    budgets: list[float],
    n_init: int,
    n_last: int,
) -> dict[str, Any]:
    """Costs per (layer, α) and, per budget, the allocation (or why none fits)."""
    window = SparseConfig(n_init=n_init, n_last=n_last)
    start = time.perf_counter()
    costs = measure_layer_costs(model, texts, steps=steps, alphas=alphas, config=window)
    measure_s = time.perf_counter() - start
    allocations = []
    for budget in budgets:
        try:
            cal = allocate_alpha(costs, budget)
        except ConfigError as exc:
            allocations.append({"budget": budget, "error": str(exc)})
            continue
        allocations.append(
            {
                "budget": budget,
                "attended": cal.attended,
                "kl": cal.kl,
                "layer_alpha": {str(k): v for k, v in cal.layer_alpha.items()},
            }
        )
    return {
        "costs": [vars(c) for c in costs],
        "allocations": allocations,
        "measure_s": measure_s,
    }


def cost_table(costs: list[dict[str, Any]], alphas: list[float]) -> list[dict[str, Any]]:
    """One row per layer: attended share and KL (×1e4) at each α."""
    rows: dict[int, dict[str, Any]] = {}
    for c in costs:
        row = rows.setdefault(c["layer"], {"layer": c["layer"]})
        row[f"att@{c['alpha']:g}"] = c["attended"]
        row[f"kl@{c['alpha']:g}"] = c["kl"] * 1e4
    return [rows[k] for k in sorted(rows)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[8192], alphas=[1e-2, 3e-3, 1e-3, 3e-4, 1e-4])
    parser.add_argument("--steps", type=int, default=24, help="teacher-forced steps per text")
    parser.add_argument("--texts", type=int, nargs="+", default=[10, 11], help="corpus seeds")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.09, 0.095, 0.1])
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.steps, args.texts = [min(args.lengths[0], 1024)], 4, args.texts[:1]
        args.alphas = args.alphas[:2]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    C.set_threads(args.threads)
    model, tok = C.load_model(args.model)
    length = args.lengths[0]
    texts = [C.text_ids(tok, length + args.steps, seed=seed) for seed in args.texts]
    result = run(
        model,
        texts,
        steps=args.steps,
        alphas=args.alphas,
        budgets=args.budgets,
        n_init=args.n_init,
        n_last=args.n_last,
    )
    table = cost_table(result["costs"], args.alphas)
    columns = ["layer"] + [f"{m}@{a:g}" for a in args.alphas for m in ("att", "kl")]
    print(f"per layer, one sparse at a time: share of keys attended and KL ×1e4 ({length} tokens)")
    print(C.format_table(table, columns))
    for alloc in result["allocations"]:
        print(alloc)
    path = C.write_result(
        "calibrate",
        {
            "benchmark": "attention_calibrate",
            "model": args.model,
            "quick": args.quick,
            "length": length,
            "context_tokens": length,  # the prefill; the steps come after it
            "steps": args.steps,
            "texts": args.texts,
            "alphas": args.alphas,
            "n_init": args.n_init,
            "n_last": args.n_last,
            "machine": C.machine(args.threads),
            **result,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
