"""Chunker throughput on 1 MB sections: prose, markdown, a word without spaces, base64.

Each input is one section (the worst case for a chunker: no parser has cut it up). The target:
every splitter chunks each 1 MB section in well under a few seconds on 2 cores. The table also
shows the cost of tokenizing the section once, which every splitter pays. "cpu seconds" is the process's CPU time (all its threads): on a shared
machine it is the steadier figure, and on an idle 2-core machine wall time is at most about it.

    .venv/bin/python benchmarks/chunking.py [--mb 1.0] [--repeat 1] [--out benchmarks/results/chunking.json]
"""

from __future__ import annotations

import argparse
import ast
import base64
import random
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _chunking_support import minilm_tokenizer  # noqa: E402
from _common import format_table, machine_info, timed, write_json  # noqa: E402
from vectorstream.chunking import ChunkOptions, make_chunker  # noqa: E402
from vectorstream.types import Section  # noqa: E402


def _stdlib_prose() -> str:
    """English text already on the machine: docstrings of the standard library's source files,
    read with ``ast`` (nothing is imported or run)."""
    docs: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    docs.append(doc)
        if sum(map(len, docs)) > 400_000:
            break
    return "\n\n".join(docs)


def inputs(size: int) -> dict[str, str]:
    rng = random.Random(0)
    prose = _stdlib_prose()
    paragraphs = [p for p in prose.split("\n\n") if p.strip()]
    body: list[str] = []
    md: list[str] = []
    while sum(map(len, body)) < size:
        p = rng.choice(paragraphs)
        body.append(p)
        if rng.random() < 0.05:
            md.append(f"{'#' * rng.randint(1, 3)} Heading {len(md)}")
        md.append(p if rng.random() > 0.1 else f"```python\n# code\n{p}\n```")
    return {
        "prose": "\n\n".join(body)[:size],
        "markdown": "\n\n".join(md)[:size],
        "no spaces (letters)": "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(size)
        ),
        "no spaces (base64)": base64.b64encode(rng.randbytes(size * 3 // 4)).decode()[:size],
    }


def _fake_embed(texts: list[str]) -> np.ndarray:
    # The semantic splitter's own cost, without a model: a cheap deterministic vector per text.
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i, hash(word) % 64] += 1.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "chunking.json"))
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    tokenizer = minilm_tokenizer()
    rows: list[dict[str, Any]] = []
    for name, text in inputs(size).items():
        cpu = time.process_time()
        with timed() as t:
            n_tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
        cpu = time.process_time() - cpu
        rows.append(
            {
                "input": name,
                "splitter": "(tokenize once)",
                "seconds": t["seconds"],
                "cpu seconds": cpu,
                "chunks": None,
                "tokens": n_tokens,
            }
        )
        for splitter in ("tokens", "sentences", "markdown", "semantic"):
            options = ChunkOptions(splitter, 256, 32)
            embed = _fake_embed if splitter == "semantic" else None
            chunker = make_chunker(options, tokenizer, 256, embed=embed)
            best = best_cpu = float("inf")
            chunks = 0
            for _ in range(args.repeat):
                cpu = time.process_time()
                with timed() as t:
                    chunks = sum(1 for _ in chunker.chunk([Section(text, "bench")]))
                best = min(best, t["seconds"])
                best_cpu = min(best_cpu, time.process_time() - cpu)
            rows.append(
                {
                    "input": name,
                    "splitter": splitter,
                    "seconds": best,
                    "cpu seconds": best_cpu,
                    "chunks": chunks,
                    "MB/s": len(text) / 1e6 / best,
                }
            )
            print(f"{name:22} {splitter:10} {best:6.2f} s  {chunks} chunks", file=sys.stderr)
    columns = ["input", "splitter", "seconds", "cpu seconds", "MB/s", "chunks", "tokens"]
    print(format_table(rows, columns))
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "section_bytes": size,
            "chunk_tokens": 256,
            "overlap": 32,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
