"""Charts of the attention evaluations, from their JSON results (no model needed).

    .venv/bin/python benchmarks/attention/charts.py

Reads ``benchmarks/results/attention_{graph,passkey,window_sweep_*}.json`` (whichever exist) and
writes beside them:

- ``attention_graph.png``: keys scored (touched) against recall of exact DIPR, per index kind
  (GQA-shared graph, per-query-head graphs, key-only graph, key-only HNSW at equal recall), one
  point per layer and α, one panel per context length;
- ``attention_passkey.png``: pass-key accuracy per depth, full attention beside DIPR, per length;
- ``attention_window_sweep.png``: top-1 agreement against the fraction of keys attended at 8K for
  each recent-window size, over the α sweep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def graph_chart(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = [r for r in data["rows"] if r.get("recall") is not None]
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths), 3.8), squeeze=False)
    markers = {"shared": "o", "per-head": "s", "key-only": "^", "hnsw": "x"}
    for ax, length in zip(axes[0], lengths, strict=True):
        for method, marker in markers.items():
            pts = [
                (100 * r["touched"], 100 * r["recall"])
                for r in rows
                if r["length"] == length and r["method"] == method and r.get("touched") is not None
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=marker, label=method)
        ax.set_title(f"{length} keys per head")
        ax.set_xlabel("keys scored (% of the context)")
        ax.set_ylabel("recall of exact DIPR (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def passkey_chart(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = data["rows"]
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.4), squeeze=False)
    for ax, length in zip(axes[0], lengths, strict=True):
        mine = [r for r in rows if r["length"] == length]
        methods = sorted({(r["method"], r["alpha"] or 0.0) for r in mine})
        depths = sorted({r["depth"] for r in mine})
        width = 0.8 / max(1, len(methods))
        for i, (method, alpha) in enumerate(methods):
            acc = [
                100
                * next(
                    r["accuracy"]
                    for r in mine
                    if r["depth"] == d and r["method"] == method and (r["alpha"] or 0.0) == alpha
                )
                for d in depths
            ]
            label = method if method == "full" else f"{method} α={alpha:g}"
            ax.bar([j + i * width for j in range(len(depths))], acc, width, label=label)
        ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(depths))])
        ax.set_xticklabels([f"{d:.0%}" for d in depths])
        ax.set_title(f"{length} tokens")
        ax.set_xlabel("depth of the pass key")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_chart(sweeps: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.6 * len(sweeps), 3.8), squeeze=False)
    for ax, data in zip(axes[0], sweeps, strict=True):
        rows = [r for r in data["rows"] if r["method"] == "dipr"]
        for window in sorted({r["n_last"] for r in rows}):
            pts = sorted(
                (100 * r["attended"], 100 * r["top1"]) for r in rows if r["n_last"] == window
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"window {window}")
        ax.axhline(99, color="grey", lw=0.8, ls="--")
        ax.axvline(10, color="grey", lw=0.8, ls="--")
        ax.set_title(f"8K tokens, {data['steps']} teacher-forced steps")
        ax.set_xlabel("keys attended (%)")
        ax.set_ylabel("top-1 agreement with full attention (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    written = []
    graph = _load("attention_graph.json")
    if graph:
        graph_chart(graph, RESULTS / "attention_graph.png")
        written.append("attention_graph.png")
    passkey = _load("attention_passkey.json")
    if passkey:
        passkey_chart(passkey, RESULTS / "attention_passkey.png")
        written.append("attention_passkey.png")
    sweeps = [
        d for d in (_load(f"attention_window_sweep_{n}.json") for n in (256, 512)) if d is not None
    ]
    if sweeps:
        sweep_chart(sweeps, RESULTS / "attention_window_sweep.png")
        written.append("attention_window_sweep.png")
    if not written:
        sys.exit("no attention results to chart under benchmarks/results/")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
