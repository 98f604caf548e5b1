"""Soak: ``vectorstream serve`` at concurrency 64 for ten minutes, sampling the server's RSS.

    .venv/bin/python benchmarks/soak.py                 # 600 s
    .venv/bin/python benchmarks/soak.py --seconds 60    # a shorter check

Goal: no errors and no memory growth (the mean RSS of the last tenth of the run within 5% of the
first tenth's). Writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import format_table, machine_info, write_json
from _server_support import MODEL_DIR, serve_process
from serve import build_search_store, load

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vectorstream.models import load_model

    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="vectorstream-soak-") as folder:
        uri = f"lancedb://{folder}"
        build_search_store(uri, load_model(str(MODEL_DIR)), rng, 300)
        cli = ["--model", str(MODEL_DIR), "--store", uri, "--collection", "bench"]
        with serve_process([*cli, "--log-level", "warning"]) as (base, process):
            row = asyncio.run(load(base, args.concurrency, args.seconds, rng, process.pid))
    growth = row["rss_last_mib"] / row["rss_first_mib"]
    row["rss_growth"] = growth
    row["ok"] = row["errors"] == 0 and growth <= 1.05
    print(format_table([row], [k for k in row if k != "rss_trace_mib"]))
    print("RSS every 10 s (MiB):", row.get("rss_trace_mib"))
    out = write_json(args.out, {"benchmark": "soak", "machine": machine_info(), **row})
    print(f"\nwrote {out}")
    sys.exit(0 if row["ok"] else 1)


if __name__ == "__main__":
    main()
