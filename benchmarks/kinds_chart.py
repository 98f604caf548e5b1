"""The chart of every embedding kind's goals: each measured value against its target.

Reads ``results/kinds.json`` (``kinds.py``), any later single-section runs beside it
(``results/kinds_<section>.json``, written with ``kinds.py --only SECTION --out ...``; their goals
replace that section's) and the ingest-memory runs (``results/kinds_memory_*.json``,
``kinds_memory.py``). Every goal is drawn as value ÷ target, oriented so that 1 is the target and
more is better (a ceiling such as a memory limit is drawn as target ÷ value), on a log axis.

    python benchmarks/kinds_chart.py        # writes benchmarks/results/kinds.png
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _target(text: str) -> tuple[str, float]:
    """``(">=" or "<=", number)`` from a goal's target text such as ``">= 1.50"``."""
    found = re.match(r"\s*([<>]=)\s*([\d,.]+)", text)
    if found is None:
        raise ValueError(f"cannot read the target {text!r}")
    return found.group(1), float(found.group(2).replace(",", ""))


def goals(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every goal as ``{goal, section, score, met}``; ``score`` ≥ 1 means met."""
    base = json.loads((results / "kinds.json").read_text())
    by_section: dict[str, list[dict[str, Any]]] = {}
    for goal in base["goals"]:
        by_section.setdefault(goal["section"], []).append(goal)
    for path in sorted(results.glob("kinds_*.json")):
        if path.name.startswith("kinds_memory"):
            continue
        later = [g for g in json.loads(path.read_text()).get("goals", []) if g.get("value")]
        for section in {g["section"] for g in later}:  # the sections that run measured
            by_section[section] = [g for g in later if g["section"] == section]
    rows = []
    for section, items in by_section.items():
        for goal in items:
            if goal.get("value") is None:
                continue
            op, number = _target(str(goal["target"]))
            value = float(goal["value"])
            score = value / number if op == ">=" else number / max(value, 1e-12)
            rows.append({"goal": goal["goal"], "section": section, "score": score})
    for path in sorted(results.glob("kinds_memory_*.json")):
        run = json.loads(path.read_text())
        if run.get("store", "lancedb") != "lancedb":
            continue  # the goal is an ingest into the default store; other sinks are diagnostics
        limit = float(run["goal"]["max"])
        where = f" into {run['store']}" if run.get("store") else ""
        rows.append(
            {
                "goal": f"{run['kind']} ingest{where}: peak RSS ×10 ÷ ×1",
                "section": "memory",
                "score": limit / float(run["ratio"]),
            }
        )
    for row in rows:
        row["met"] = row["score"] >= 1.0
    return rows


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(10, 0.34 * len(rows) + 1.2))
    names = [r["goal"] for r in rows]
    scores = [r["score"] for r in rows]
    colors = ["#58a55c" if r["met"] else "#d0553b" for r in rows]
    axis.barh(names, scores, color=colors)
    axis.axvline(1.0, color="black", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlabel("measured ÷ target (≥ 1: goal met; ceilings drawn as target ÷ measured)")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=7)
    top = max(scores)
    axis.set_xlim(min(0.5, min(scores) / 1.2), max(2.0, 10 ** math.ceil(math.log10(top))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0]) if args else RESULTS
    rows = goals(results)
    for row in rows:
        mark = "met" if row["met"] else "NOT met"
        print(f"{row['score']:8.2f}  {mark:7}  {row['goal']}")
    out = results / "kinds.png"
    chart(rows, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
