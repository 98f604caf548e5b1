"""Peak memory of an ingest with a non-dense model: corpus x1 against x10 (goal: <= 1.15).

Multivector models make one vector per token (tens of times the bytes of one vector per chunk)
and images are megabytes before they are pixels, so these are the kinds where a pipeline that
holds the corpus's embeddings runs out of memory. Each ingest runs in a fresh process; the peak
RSS of the whole process tree is sampled.

    python benchmarks/kinds_memory.py --model FOLDER --kind multivector           # the sample corpus
    python benchmarks/kinds_memory.py --model CLIP_FOLDER --kind image --images 60  # generated images
    python benchmarks/kinds_memory.py --quick --model ... --kind ...
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_info, mib, run_measured, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _child(corpus: str, store: str, model: str, kind: str, scheme: str) -> None:
    from vectorstream import ingest
    from vectorstream.models import load_model

    loaded = load_model(model, kind=kind)
    uri = f"lancedb://{store}" if scheme == "lancedb" else f"{scheme}:{store}"
    report = ingest([corpus], store=uri, model=loaded)
    print(json.dumps(report.to_dict()))


def _images(root: Path, count: int, seed: int) -> Path:
    """``count`` photos-like images (noise and gradients, 320-1600 px, JPEG and PNG)."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        w, h = rng.randint(320, 1600), rng.randint(240, 1200)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (w + h))], axis=-1)
        noise = np.random.default_rng(seed * 1000 + i).integers(0, 40, (h, w, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        fmt = "JPEG" if i % 2 else "PNG"
        Image.fromarray(pixels).save(buffer, format=fmt)
        (root / f"img{i:05d}.{fmt.lower().replace('jpeg', 'jpg')}").write_bytes(buffer.getvalue())
    return root


def _measure(
    corpus: Path, store: Path, model: str, kind: str, scheme: str
) -> tuple[dict[str, Any], int]:
    shutil.rmtree(store, ignore_errors=True)
    args = [sys.executable, __file__, "child", str(corpus), str(store), model, kind, scheme]
    m = run_measured(args, timeout=3600)
    if m.returncode not in (0, 1):
        raise SystemExit(f"ingest failed ({m.returncode}):\n{m.stderr_tail}")
    return json.loads(m.stdout_tail.strip().splitlines()[-1]), m.peak_rss_bytes


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _child(*sys.argv[2:7])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder or spec")
    ap.add_argument("--kind", required=True, choices=("dense", "sparse", "multivector", "image"))
    ap.add_argument("--documents", type=int, default=40, help="sample documents in the x1 corpus")
    ap.add_argument("--images", type=int, default=0, help="generated images in the x1 corpus")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument(
        "--store", default="lancedb", choices=("lancedb", "parquet"), help="where the vectors go"
    )
    ap.add_argument("--quick", action="store_true", help="a tiny corpus, to check the harness")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.documents, args.images, args.scale = 4, min(args.images, 4), 2
    from vectorstream.samples import build_sample_corpus

    work = Path(tempfile.mkdtemp(prefix="vs-kinds-memory-"))
    try:
        if args.images:
            small = _images(work / "x1", args.images, seed=0)
            large = _images(work / f"x{args.scale}", args.images * args.scale, seed=1)
        else:
            small = build_sample_corpus(work / "x1", documents=args.documents).path
            large = build_sample_corpus(
                work / f"x{args.scale}", documents=args.documents, scale=args.scale
            ).path
        # Untimed first run: a model's first load exports its graphs (torch in memory), which
        # is not what the ingest holds.
        _measure(small, work / "store-warm-up", args.model, args.kind, args.store)
        rows = []
        for label, corpus in (("x1", small), (f"x{args.scale}", large)):
            report, peak = _measure(
                corpus, work / f"store-{label}", args.model, args.kind, args.store
            )
            rows.append(
                {
                    "run": label,
                    "files": report["files_ok"],
                    "failed": report["files_failed"],
                    "vectors": report["vectors"],
                    "seconds": round(report["seconds"], 1),
                    "peak RSS MiB": round(mib(peak) or 0),
                    "peak_rss": peak,
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = rows[1]["peak_rss"] / rows[0]["peak_rss"]
    shown = [{k: v for k, v in r.items() if k != "peak_rss"} for r in rows]
    print(f"{args.kind} model {args.model}")
    print(format_table(shown, list(shown[0])))
    print(f"\npeak RSS x{args.scale} / x1: {ratio:.3f}  (goal <= 1.15)")
    suffix = "" if args.store == "lancedb" else f"_{args.store}"
    out = args.out or RESULTS / f"kinds_memory_{args.kind}{suffix}.json"
    write_json(
        out,
        {
            "benchmark": "kinds_memory",
            "kind": args.kind,
            "store": args.store,
            "model": args.model,
            "machine": machine_info(),
            "rows": shown,
            "ratio": ratio,
            "goal": {"max": 1.15, "met": ratio <= 1.15},
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
