"""Memory and throughput of the whole ingest pipeline.

Two questions, answered side by side in one run:

1. Does peak memory depend on the buffer and not on the corpus? Peak RSS of the whole process
   tree (parent + parsing workers) ingesting a corpus and the same corpus x10 (goal: <= 1.15x).
2. Does the pipeline keep the model busy? Chunks/s of the full ingest (parse, chunk, tokenise,
   embed, write) against the model alone on the very same chunk texts, pre-tokenised, in the same
   window size (goal: >= 0.9x).

Each measurement runs in a fresh subprocess. Usage:

    python benchmarks/ingest_memory.py [--documents 40] [--scale 10] [--int8] [--repeats 1]
    python benchmarks/ingest_memory.py --quick      # a tiny corpus, to check the harness
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_info, mib, run_measured, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _child_ingest(corpus: str, store: str, int8: bool, workers: int | None) -> None:
    from vectorstream import ingest

    report = ingest([corpus], store=f"lancedb://{store}", quantized=int8, workers=workers)
    print(json.dumps(report.to_dict()))


def _child_limit(store: str, int8: bool, window: int) -> None:
    import lancedb

    from vectorstream import load_model

    model = load_model(quantized=int8)
    texts = lancedb.connect(store).open_table("documents").to_arrow()["text"].to_pylist()
    windows = [texts[i : i + window] for i in range(0, len(texts), window)]
    encoded = [model.tokenize(w) for w in windows]  # not timed: the limit is the model alone
    model.embed_tokenized(encoded[0][:8])  # warm-up
    start = time.perf_counter()
    for enc in encoded:
        model.embed_tokenized(enc)
    seconds = time.perf_counter() - start
    tokens = sum(sum(e.attention_mask) for enc in encoded for e in enc)
    print(json.dumps({"chunks": len(texts), "seconds": seconds, "tokens": tokens}))


def _measure(args: list[str]) -> tuple[dict[str, Any], int]:
    m = run_measured([sys.executable, __file__, "child", *args], timeout=3600)
    if m.returncode not in (0, 1):
        raise SystemExit(f"child {args[:2]} failed ({m.returncode}):\n{m.stderr_tail}")
    return json.loads(m.stdout_tail.strip().splitlines()[-1]), m.peak_rss_bytes


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        kind, *rest = sys.argv[2:]
        if kind == "ingest":
            workers = None if rest[3] == "auto" else int(rest[3])
            _child_ingest(rest[0], rest[1], rest[2] == "int8", workers)
        else:
            _child_limit(rest[0], rest[1] == "int8", int(rest[2]))
        return

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--documents", type=int, default=40, help="source documents in the x1 corpus")
    ap.add_argument("--scale", type=int, default=10, help="multiplier of the large corpus")
    ap.add_argument("--int8", action="store_true", help="use the int8 model")
    ap.add_argument("--workers", default="auto", help="parsing processes (default: automatic)")
    ap.add_argument("--repeats", type=int, default=1, help="repeat the x1 measurements")
    ap.add_argument("--quick", action="store_true", help="tiny corpus, to check the harness")
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest_memory.json")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.documents, args.scale = 4, 2

    from vectorstream.samples import build_sample_corpus

    work = args.work or Path(tempfile.mkdtemp(prefix="vs-ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    precision = "int8" if args.int8 else "fp32"
    small = build_sample_corpus(work / "x1", documents=args.documents)
    large = build_sample_corpus(work / f"x{args.scale}", documents=args.documents, scale=args.scale)

    runs: dict[str, list[dict[str, Any]]] = {"x1": [], "limit": [], f"x{args.scale}": []}
    # Alternate pipeline and model-alone runs so drifting machine load hits both alike.
    for r in range(args.repeats):
        store = work / f"store-x1-{r}"
        shutil.rmtree(store, ignore_errors=True)
        rep, peak = _measure(["ingest", str(small.path), str(store), precision, args.workers])
        runs["x1"].append({**rep, "tree_peak_rss": peak})
        lim, lpeak = _measure(["limit", str(store), precision, "256"])
        runs["limit"].append({**lim, "tree_peak_rss": lpeak})
    store = work / f"store-x{args.scale}"
    shutil.rmtree(store, ignore_errors=True)
    rep, peak = _measure(["ingest", str(large.path), str(store), precision, args.workers])
    runs[f"x{args.scale}"].append({**rep, "tree_peak_rss": peak})

    def med(key: str, field: str) -> float:
        return statistics.median(float(r[field]) for r in runs[key])

    x1_rate = statistics.median(r["chunks"] / r["seconds"] for r in runs["x1"])
    limit_rate = statistics.median(r["chunks"] / r["seconds"] for r in runs["limit"])
    big = runs[f"x{args.scale}"][0]
    big_rate = big["chunks"] / big["seconds"]
    rows = [
        {
            "run": f"pipeline x1 ({small.files} files)",
            "chunks": int(med("x1", "chunks")),
            "seconds": round(med("x1", "seconds"), 1),
            "chunks/s": round(x1_rate, 1),
            "peak RSS MiB": round(mib(med("x1", "tree_peak_rss")) or 0),
        },
        {
            "run": f"pipeline x{args.scale} ({large.files} files)",
            "chunks": big["chunks"],
            "seconds": round(big["seconds"], 1),
            "chunks/s": round(big_rate, 1),
            "peak RSS MiB": round(mib(big["tree_peak_rss"]) or 0),
        },
        {
            "run": "model alone (same chunks)",
            "chunks": int(med("limit", "chunks")),
            "seconds": round(med("limit", "seconds"), 1),
            "chunks/s": round(limit_rate, 1),
            "peak RSS MiB": round(mib(med("limit", "tree_peak_rss")) or 0),
        },
    ]
    ratios = {
        "rss_x_scale_over_x1": big["tree_peak_rss"] / med("x1", "tree_peak_rss"),
        "pipeline_x1_over_model": x1_rate / limit_rate,
        "pipeline_xscale_over_model": big_rate / limit_rate,
    }
    print(format_table(rows, list(rows[0])))
    print()
    print(
        f"peak RSS x{args.scale} / x1:           {ratios['rss_x_scale_over_x1']:.3f}  (goal <= 1.15)"
    )
    print(f"pipeline / model alone (x1):  {ratios['pipeline_x1_over_model']:.3f}  (goal >= 0.9)")
    print(f"pipeline / model alone (x{args.scale}): {ratios['pipeline_xscale_over_model']:.3f}")
    out = write_json(
        args.out,
        {
            "benchmark": "ingest_memory",
            "precision": precision,
            "machine": machine_info(),
            "corpus": {
                "x1": {"files": small.files, "bytes": small.bytes},
                f"x{args.scale}": {"files": large.files, "bytes": large.bytes},
            },
            "rows": rows,
            "ratios": ratios,
            "runs": runs,
        },
    )
    print(f"\nwrote {out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
