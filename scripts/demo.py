"""The README's main job: build a sample corpus, ingest it into the embedded store, search it.

The corpus is generated from the Python standard library's own documentation (text, markdown,
HTML, PDF and DOCX files), so it needs nothing from the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
BIN = Path(sys.executable).parent / "vectorstream"

QUERIES = [
    "how do I parse command line arguments",
    "compress data with gzip",
    "format a date as a string",
]


def run(*args: str) -> None:
    print(f"\n$ vectorstream {' '.join(args)}", flush=True)
    code = subprocess.call([str(BIN), *args])
    if code not in (0, 1):  # 1: some files failed, which the summary shows; keep going
        sys.exit(code)


def main() -> None:
    from vectorstream.samples import build_sample_corpus

    corpus = DEMO / "corpus"
    for old in (corpus, DEMO / "store"):  # start fresh so the demo shows a full ingest
        if old.exists():
            shutil.rmtree(old)
    info = build_sample_corpus(corpus, documents=40)
    formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(info.by_format.items()))
    print(f"sample corpus: {info.files} files ({formats}), {info.bytes / 1e6:.1f} MB in {corpus}")
    store = f"lancedb://{DEMO / 'store'}"
    run("ingest", str(corpus), "--store", store)
    for query in QUERIES:
        run("search", query, "--store", store, "-k", "3")
    print("\nRun the ingest again: unchanged files are skipped.")
    run("ingest", str(corpus), "--store", store)


if __name__ == "__main__":
    main()
