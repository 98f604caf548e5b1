"""Teacher-forced quality of sparse decoding against full attention, beside two fixed-budget baselines.

For each context length the text (standard-library documentation) is prefilled exactly, then its
own continuation is fed one decode step at a time. Full attention's logits at those steps (the same
tokens run as one exact chunk) are the reference. Each method is scored on

- KL(full ‖ method) of the next-token distribution, mean over steps (nats);
- top-1 agreement: the method's argmax equals full attention's;
- perplexity of the continuation and its change against full attention;
- the fraction of the keys attended (window plus selected), mean over steps, layers and heads.

Methods: DIPR (``mode=flat``: exact DIPR by one scan; ``--graph`` adds the graph index, built from
the prefill's keys and sampled queries, layer 0 still scanned) for each α,
and at the budget DIPR used at that α (its mean keys per layer): **window** (StreamingLLM: the
``n_init`` sinks and a recent window longer by the budget) and **top-k** (the window plus the exact
``k`` best middle keys per query head). ``--mass ε`` adds the top-p oracle: the window plus the
fewest middle keys leaving out at most ε of each head's softmax weight, chosen from every score
(it shows how many keys a given weight error needs; no index answers it without scoring all).

    .venv/bin/python benchmarks/attention/quality.py --quick                 # smoke: 1K tokens
    .venv/bin/python benchmarks/attention/quality.py --lengths 2048 4096 8192 --alphas 1e-4 1e-3 1e-2
    .venv/bin/python benchmarks/attention/quality.py --lengths 8192 --texts 0 1 2 3  # pooled over texts

With several ``--texts`` (seeds of the corpus's document order, so different documents and
continuations) each text is evaluated on its own and a pooled table sums the misses over all of
them: one text's continuation can be easier or harder than another's.

Prints a table and writes benchmarks/results/attention_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = [
    "text",
    "length",
    "method",
    "alpha",
    "mass",
    "budget",
    "n_last",
    "attended",
    "touched",
    "kl",
    "top1",
    "ppl",
    "ppl_change",
    "tok_s",
]


def score(reference: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """KL(reference ‖ logits), top-1 agreement and perplexity of ``targets`` under ``logits``."""
    ref_logp = torch.log_softmax(reference, dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return {
        "kl": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
        "ppl": float(torch.exp(nll.mean())),
    }


def evaluate_length(
    model: Any,
    ids: list[int],
    length: int,
    steps: int,
    alphas: list[float],
    *,
    text: int = 0,
    n_init: int = 4,
    n_last: int = 512,
    graph: bool = False,
    windows: list[int] | None = None,
    baselines: bool = True,
    masses: list[float] | None = None,
    calibrated: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for one context length: full, then per window and α DIPR (flat[, graph]), window and top-k.

    ``windows``: the recent-window sizes (``n_last``) to try, each with every α, on one prefill.
    ``calibrated``: allocations from ``calibrate.py`` (``budget``, ``layer_alpha``), each decoded
    with its α per layer at ``n_last`` (the window it was calibrated for).
    """
    context, cont = ids[:length], ids[length : length + steps + 1]
    if len(cont) < 2:
        raise ValueError(f"need at least {length + 2} ids, got {len(ids)}")
    feed, targets = cont[:-1], torch.tensor(cont[1:])
    start = time.perf_counter()
    base, _ = C.prefill(model, context, max_queries=2048 if graph else 0)
    prefill_s = time.perf_counter() - start
    if graph:
        start = time.perf_counter()
        base.install_graphs(base.build_graphs(), length)
        build_s = time.perf_counter() - start
    reference = C.chunk_logits(model, C.fork(base, C.SparseConfig(mode="full")), feed)
    full = score(reference, reference, targets)
    rows: list[dict[str, Any]] = [
        {
            "text": text,
            "length": length,
            "method": "full",
            "alpha": None,
            "attended": 1.0,
            **full,
            "ppl_change": 0.0,
            "steps": len(feed),
            "prefill_s": prefill_s,
        }
    ]
    if graph:
        rows[0]["graph_build_s"] = build_s

    def run(method: str, alpha: float | None, session: Any, n_last: int) -> dict[str, Any]:
        start = time.perf_counter()
        logits = C.teacher_forced(model, session, feed)
        elapsed = time.perf_counter() - start
        s = score(reference, logits, targets)
        missed = logits.argmax(-1) != reference.argmax(-1)
        top2 = reference.topk(2, dim=-1).values
        stats = session.stats
        row = {
            "text": text,
            "length": length,
            "method": method,
            "alpha": alpha,
            "attended": C.mean_fraction(stats),
            "touched": C.mean_fraction(stats, "touched_fraction"),
            **s,
            "ppl_change": s["ppl"] / full["ppl"] - 1.0,
            "tok_s": len(feed) / elapsed,
            "steps": len(feed),
            "n_last": n_last,
            # Counts, so a reader can put an interval on the agreement.
            "top1_misses": round((1.0 - s["top1"]) * len(feed)),
            # How close full attention's own top two logits were where the method differed.
            "miss_steps": missed.nonzero().flatten().tolist(),
            "miss_margins": [round(float(m), 4) for m in (top2[:, 0] - top2[:, 1])[missed]],
        }
        rows.append(row)
        return row

    for window, alpha in [(w, a) for w in windows or [n_last] for a in alphas]:
        cfg = C.SparseConfig(alpha=alpha, n_init=n_init, n_last=window, mode="flat", max_queries=0)
        dipr_session = C.fork(base, cfg)
        run("dipr", alpha, dipr_session, window)
        budget = C.layer_budget(dipr_session.stats)
        if graph:
            # The package's rule with the index always eligible: layer 0 flat, the rest graph.
            gcfg = C.SparseConfig(
                alpha=alpha,
                n_init=n_init,
                n_last=window,
                full_below=0,
                graph_min=0,
                max_queries=0,
            )
            run("graph", alpha, C.fork(base, gcfg), window)
        for selector in ("window", "topk") if baselines else ():
            row = run(selector, alpha, C.fork(base, cfg, selector, budget), window)
            row["budget_per_layer"] = budget
    for window in windows or [n_last]:
        for mass in masses or []:
            cfg = C.SparseConfig(n_init=n_init, n_last=window, mode="flat", max_queries=0)
            row = run("mass", mass, C.fork(base, cfg, "mass", mass=mass), window)
            row["alpha"], row["mass"] = None, mass
    for alloc in calibrated or []:
        layer_alpha = {int(k): float(v) for k, v in alloc["layer_alpha"].items()}
        cfg = C.SparseConfig(
            n_init=n_init, n_last=n_last, mode="flat", max_queries=0, layer_alpha=layer_alpha
        )
        row = run("calibrated", None, C.fork(base, cfg), n_last)
        row["budget"] = alloc["budget"]
    return rows


def pool(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (length, method, α, window) over every text: misses summed, means by steps."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (
            row["length"],
            row["method"],
            row["alpha"],
            row.get("n_last"),
            row.get("mass"),
            row.get("budget"),
        )
        groups.setdefault(key, []).append(row)
    pooled = []
    for (length, method, alpha, n_last, mass, budget), group in groups.items():
        steps = sum(r["steps"] for r in group)
        misses = sum(r.get("top1_misses", 0) for r in group)

        def mean(name: str, group: list[dict[str, Any]] = group, steps: int = steps) -> float:
            return sum(r.get(name, 0.0) * r["steps"] for r in group) / steps

        pooled.append(
            {
                "text": "all",
                "length": length,
                "method": method,
                "alpha": alpha,
                "n_last": n_last,
                "mass": mass,
                "budget": budget,
                "texts": len(group),
                "steps": steps,
                "attended": mean("attended"),
                "kl": mean("kl"),
                "top1": 1.0 - misses / steps,
                "top1_misses": misses,
                "ppl_change": mean("ppl_change"),
            }
        )
    return pooled


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Top-1 agreement against the fraction of keys attended, one panel per context length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.6), squeeze=False)
    for ax, length in zip(axes[0], lengths, strict=True):
        methods = (
            ("dipr", "o"),
            ("graph", "D"),
            ("topk", "s"),
            ("window", "^"),
            ("mass", "v"),
            ("calibrated", "*"),
        )
        for method, marker in methods:
            pts = sorted(
                (r["attended"], r["top1"])
                for r in rows
                if r["length"] == length and r["method"] == method
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, label=method)
        if length == 8192:  # the goal: ≥ 99% top-1 while attending ≤ 10% of the keys
            ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
            ax.axvline(0.10, color="grey", linestyle=":", linewidth=1, label="goal")
        ax.set_title(f"{length} tokens")
        ax.set_xlabel("fraction of keys attended")
        ax.set_ylabel("top-1 agreement with full attention")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[2048, 4096, 8192], alphas=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--steps", type=int, default=128, help="teacher-forced decode steps")
    parser.add_argument("--graph", action="store_true", help="also decode with the graph index")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG chart here")
    parser.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=None,
        help="several recent-window sizes (n_last) to sweep on one prefill (default: --n-last)",
    )
    parser.add_argument(
        "--texts",
        type=int,
        nargs="+",
        default=[0],
        help="corpus seeds: one text (document order) per seed, pooled at the end",
    )
    parser.add_argument(
        "--mass",
        type=float,
        nargs="+",
        default=None,
        help="also the top-p oracle: keep the fewest keys leaving out at most this softmax weight",
    )
    parser.add_argument(
        "--calibrated",
        type=Path,
        default=None,
        help="calibrate.py's JSON: also decode with each budget's α per layer",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="DIPR only: skip the window and top-k rows"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.steps = [min(args.lengths[0], 1024)], min(args.steps, 32)
        args.alphas = args.alphas[-2:]
    calibrated = None
    if args.calibrated:
        loaded = json.loads(args.calibrated.read_text())
        calibrated = [a for a in loaded["allocations"] if "layer_alpha" in a]
    C.set_threads(args.threads)
    start = time.perf_counter()
    model, tok = C.load_model(args.model)
    load_s = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    for text in args.texts:
        ids = C.text_ids(tok, max(args.lengths) + args.steps + 1, seed=text)
        for length in args.lengths:
            new = evaluate_length(
                model,
                ids,
                length,
                args.steps,
                args.alphas,
                text=text,
                n_init=args.n_init,
                n_last=args.n_last,
                graph=args.graph,
                windows=args.windows,
                baselines=not args.no_baselines,
                masses=args.mass,
                calibrated=calibrated,
            )
            rows += new
            print(C.format_table(new, COLUMNS), flush=True)
    pooled = pool(rows) if len(args.texts) > 1 else []
    if pooled:
        print("pooled over texts", args.texts)
        print(C.format_table(pooled, [*COLUMNS[:-1], "top1_misses", "steps"]), flush=True)
    path = C.write_result(
        "quality",
        {
            "benchmark": "attention_quality",
            "model": args.model,
            "quick": args.quick,
            "steps": args.steps,
            "alphas": args.alphas,
            "n_init": args.n_init,
            "n_last": args.n_last,
            "windows": args.windows or [args.n_last],
            "texts": args.texts,
            "load_s": load_s,
            "machine": C.machine(args.threads),
            "rows": rows,
            "pooled": pooled,
        },
        args.out,
    )
    print(f"wrote {path}")
    if args.plot:
        plot(pooled or rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
