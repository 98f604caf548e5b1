"""Parser throughput and memory: how fast each format becomes sections, and how little it holds.

Generates one document per format at run time (sizes below), parses each in this process, and
reports input MB/s, sections/s and the peak RSS growth while parsing (sampled every 10 ms). The
point: parsing runs in worker processes and must stay well ahead of the model (a few thousand
tokens/s on 2 cores), and streaming formats must not grow with the file.

    .venv/bin/python benchmarks/parse_throughput.py [--scale 1.0] [--out benchmarks/results/parse_throughput.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import TreeRSSSampler, format_table, machine_info, mib, timed, write_json  # noqa: E402
from _parsers_support import make_docx, make_pdf  # noqa: E402
from vectorstream.parsers import ParseOptions, parse  # noqa: E402
from vectorstream.sources import iter_files  # noqa: E402

WORDS = [
    "stream",
    "vector",
    "parse",
    "chunk",
    "model",
    "batch",
    "token",
    "store",
    "search",
    "index",
    "query",
    "page",
    "heading",
    "section",
    "memory",
    "buffer",
    "worker",
    "queue",
    "process",
    "thread",
    "encode",
    "decode",
    "offset",
    "window",
    "overlap",
    "manifest",
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(2, 6)))


def write_until(path: Path, target: int, piece: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        size = 0
        while size < target:
            text = piece()
            fh.write(text)
            size += len(text)


def build(root: Path, scale: float) -> dict[str, Path]:
    rng = random.Random(7)
    mb = int(1_000_000 * scale)
    files = {
        "text": root / "big.txt",
        "markdown": root / "big.md",
        "html": root / "big.html",
        "code": root / "big.py",
        "csv": root / "big.csv",
        "jsonl": root / "big.jsonl",
        "long line": root / "line.txt",
        "pdf": root / "big.pdf",
        "docx": root / "big.docx",
    }
    write_until(files["text"], 20 * mb, lambda: paragraph(rng) + "\n\n")
    counter = iter(range(10**9))
    write_until(
        files["markdown"],
        10 * mb,
        lambda: (
            (f"## Part {next(counter)}\n\n" if rng.random() < 0.2 else "") + paragraph(rng) + "\n\n"
        ),
    )
    with files["html"].open("w") as fh:
        fh.write("<!doctype html><html><head><title>Bench</title><script>x()</script></head><body>")
        for i in range(int(6000 * scale)):
            if i % 10 == 0:
                fh.write(f"<h2>Chapter {i}</h2><nav><a href='#'>menu</a></nav>")
            fh.write(
                f"<div class='c'><p>{paragraph(rng)}</p><ul><li>{sentence(rng)}</li></ul></div>"
            )
        fh.write("</body></html>")
    write_until(
        files["code"],
        5 * mb,
        lambda: f"def f_{rng.randrange(10**6)}(x):\n    return x  # {sentence(rng)}\n\n",
    )
    with files["csv"].open("w") as fh:
        fh.write("id,text,tag\n")
        for i in range(int(100_000 * scale)):
            fh.write(f'{i},"{sentence(rng)}",t{i % 7}\n')
    with files["jsonl"].open("w") as fh:
        for i in range(int(100_000 * scale)):
            fh.write(json.dumps({"id": i, "text": sentence(rng), "tag": f"t{i % 7}"}) + "\n")
    files["long line"].write_text("x" * (5 * mb))
    make_pdf(
        files["pdf"],
        [[sentence(rng)[:90] for _ in range(40)] for _ in range(int(300 * scale))],
    )
    blocks: list[tuple[str, object]] = []
    for i in range(int(2000 * scale)):
        blocks.append(("h2", f"Heading {i}") if i % 20 == 0 else ("p", paragraph(rng)))
    make_docx(files["docx"], blocks)
    return files


def measure(path: Path, options: ParseOptions) -> dict[str, Any]:
    (source,) = iter_files([path])
    gc.collect()
    sections = chars = 0
    warnings: list[str] = []
    import psutil

    base = psutil.Process().memory_info().rss
    with TreeRSSSampler(os.getpid(), interval=0.01) as rss, timed() as t:
        for section in parse(source, options, warnings.append):
            sections += 1
            chars += len(section.text)
    size = path.stat().st_size
    return {
        "input_mb": size / 1e6,
        "seconds": t["seconds"],
        "mb_per_s": size / 1e6 / t["seconds"],
        "sections": sections,
        "sections_per_s": sections / t["seconds"],
        "chars": chars,
        "peak_rss_mib": mib(rss.peak_bytes),
        "rss_growth_mib": mib(max(0, rss.peak_bytes - base)),
        "warnings": len(warnings),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every document's size")
    ap.add_argument("--out", default=str(HERE / "results" / "parse_throughput.json"))
    args = ap.parse_args()
    options = ParseOptions(max_section_chars=100_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs-parse-bench-") as tmp:
        files = build(Path(tmp), args.scale)
        for fmt, path in files.items():
            row = {"format": fmt, **measure(path, options)}
            rows.append(row)
    columns = [
        "format",
        "input_mb",
        "seconds",
        "mb_per_s",
        "sections",
        "sections_per_s",
        "rss_growth_mib",
    ]
    print(format_table(rows, columns))
    out = write_json(
        args.out,
        {
            "benchmark": "parse_throughput",
            "machine": machine_info(),
            "max_section_chars": options.max_section_chars,
            "scale": args.scale,
            "rows": rows,
        },
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
