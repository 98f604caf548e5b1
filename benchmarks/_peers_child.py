"""The child side of ``benchmarks/peers.py``: one system, one phase, one result JSON.

    python benchmarks/_peers_child.py SYSTEM --phase job|identical --result OUT.json ...

``job``: the whole job with the system's own defaults, files → LanceDB (the ``limit`` embeds the
parent's chunk texts instead: the model alone on vectorstream's own chunks). ``identical``: the
system embeds exactly the parent's list of chunk texts (a JSONL file) in its own batching, and
saves the vectors for the agreement check.

Only the standard library (and ``_common``, which is standard library too) is imported at the top:
this file runs in the peers' own virtual environments, where vectorstream is not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run as a script from a peer's venv: _common sits beside this file, not on that venv's path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TABLE = "bench"
DIM = 384
MAX_TOKENS = 256
CHUNK_CHARS = 1000  # the plain loops' chunk size: about 250 MiniLM tokens of English prose
# A fake, fixed hub revision: EmbedAnything reads the ONNX folder from a hub cache laid out by hand.
REVISION = hashlib.sha1(b"vectorstream-bench-minilm").hexdigest()
EXTENSIONS = (".md", ".txt", ".html", ".pdf", ".docx")
# Texts embedded untimed before the identical-phase measurement, so first-call set-up (ONNX
# Runtime's buffers, torch's lazy initialisation) is not charged to any one system.
WARMUP_TEXTS = 8

SYSTEMS: tuple[str, ...] = (
    "vectorstream-fp32",
    "sentence-transformers",
    "vectorstream-int8",
    "fastembed",
    "embed-anything",
    "limit",
)
PHASES: tuple[str, ...] = ("job", "identical")
# How each system batches the identical texts: its own default call, as a user would make it.
IDENTICAL_BATCHING: dict[str, str] = {
    "vectorstream-fp32": "Embedder.embed(all texts): sorted by tokens, token-budget batches",
    "vectorstream-int8": "Embedder.embed(all texts): sorted by tokens, token-budget batches",
    "sentence-transformers": "model.encode(all texts): its default batches, sorted by length",
    "fastembed": "TextEmbedding.embed(all texts): its default batches, in input order",
    "embed-anything": "embed_query(all texts): its default config",
    "limit": "pre-tokenised (untimed), sorted by tokens, token-budget batches: the model alone",
}
# Packages whose versions each child reports.
VERSIONED = (
    "vectorstream",
    "onnxruntime",
    "torch",
    "sentence-transformers",
    "fastembed",
    "embed-anything",
    "lancedb",
    "tokenizers",
)


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def read_texts(path: Path) -> list[str]:
    """The chunk texts of a JSONL file of ``{"source": ..., "text": ...}`` lines, in order."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


# ------------------------------------------------------------------ a user's plain loop


def _plain_text(path: Path) -> str:
    """What a user's own loop would do to read a file: the usual library per format."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        import pypdfium2

        pdf = pypdfium2.PdfDocument(path)
        try:
            return "\n\n".join(page.get_textpage().get_text_range() for page in pdf)
        finally:
            pdf.close()
    if suffix == ".docx":
        import docx

        document = docx.Document(str(path))
        parts = [p.text for p in document.paragraphs]
        for table in document.tables:
            parts.extend(" | ".join(c.text for c in row.cells) for row in table.rows)
        return "\n\n".join(parts)
    if suffix in (".html", ".htm"):
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(path.read_text("utf-8", errors="replace"))
        for node in tree.css("script, style, nav"):
            node.decompose()
        body = tree.body
        return body.text(separator="\n") if body is not None else ""
    return path.read_text("utf-8", errors="replace")


def plain_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """A simple splitter: pack paragraphs up to ``size`` characters, cut longer ones at spaces."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        while len(para) > size:
            cut = para.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            pieces.append(para[:cut])
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > size:
            chunks.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix in EXTENSIONS)


class _LanceWriter:
    """Appends (text, source, vector) rows to one LanceDB table, as a user's loop would."""

    def __init__(self, db_dir: Path) -> None:
        import lancedb

        self.db = lancedb.connect(str(db_dir))
        self.table: Any = None

    def add(self, texts: Sequence[str], sources: Sequence[str], vectors: Any) -> None:
        import numpy as np
        import pyarrow as pa

        flat = pa.array(np.asarray(vectors, dtype=np.float32).ravel())
        batch = pa.table(
            {
                "text": pa.array(list(texts), pa.string()),
                "source": pa.array(list(sources), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, DIM),
            }
        )
        if self.table is None:
            self.table = self.db.create_table(TABLE, data=batch, mode="overwrite")
        else:
            self.table.add(batch)


def _plain_loop(corpus: Path, db_dir: Path, embed: Callable[[list[str]], Any]) -> dict[str, Any]:
    writer = _LanceWriter(db_dir)
    chunks = failed = 0
    for path in _corpus_files(corpus):
        try:
            texts = plain_chunks(_plain_text(path))
        except Exception:  # a user's loop skips what it cannot read
            failed += 1
            continue
        if texts:
            writer.add(texts, [str(path)] * len(texts), embed(texts))
            chunks += len(texts)
    return {"chunks": chunks, "files_failed": failed}


# ------------------------------------------------------------------ loading each system


def _timed_load(load: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    model = load()
    return model, time.perf_counter() - start


def _load_sentence_transformers(args: argparse.Namespace) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(args.model_dir), device="cpu")


def _load_fastembed(args: argparse.Namespace) -> Any:
    from fastembed import TextEmbedding

    return TextEmbedding(
        model_name=MODEL_ID, specific_model_path=str(args.onnx_dir), threads=args.threads
    )


def _load_embed_anything(args: argparse.Namespace) -> Any:
    from embed_anything import EmbeddingModel, WhichModel

    return EmbeddingModel.from_pretrained_onnx(
        WhichModel.Bert, hf_model_id=MODEL_ID, revision=REVISION, path_in_repo="model.onnx"
    )


def _load_vectorstream(args: argparse.Namespace, quantized: bool) -> Any:
    import vectorstream

    return vectorstream.load_model(str(args.model_dir), quantized=quantized)


LOADERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "vectorstream-fp32": lambda a: _load_vectorstream(a, quantized=False),
    "vectorstream-int8": lambda a: _load_vectorstream(a, quantized=True),
    "limit": lambda a: _load_vectorstream(a, quantized=False),
    "sentence-transformers": _load_sentence_transformers,
    "fastembed": _load_fastembed,
    "embed-anything": _load_embed_anything,
}


# ------------------------------------------------------------------ phase 1: the whole job


def _job_sentence_transformers(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    def embed(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=32, normalize_embeddings=True)

    return _plain_loop(args.corpus, args.db, embed)


def _job_fastembed(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    import numpy as np

    def embed(texts: list[str]) -> Any:
        return np.stack(list(model.embed(texts, batch_size=64)))

    return _plain_loop(args.corpus, args.db, embed)


def _job_embed_anything(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    import embed_anything
    import lancedb
    from embed_anything import TextEmbedConfig
    from embed_anything.vectordb import Adapter

    class LanceDBAdapter(Adapter):
        """EmbedAnything's vector-store interface over a LanceDB table."""

        def __init__(self, uri: str) -> None:
            super().__init__(api_key="")
            self.db = lancedb.connect(uri)
            self.table: Any = None
            self.rows = 0

        def create_index(self, dimension: int, metric: str, index_name: str, **kwargs: Any) -> None:
            self.name = index_name

        def delete_index(self, index_name: str) -> None:
            if index_name in self.db.list_tables().tables:
                self.db.drop_table(index_name)

        def convert(self, embeddings: list[Any]) -> list[dict[str, Any]]:
            return [
                {
                    "text": item.text or "",
                    "source": str((item.metadata or {}).get("file_name", "")),
                    "vector": list(item.embedding),
                }
                for item in embeddings
            ]

        def upsert(self, data: list[Any]) -> None:
            rows = self.convert(data)
            if not rows:
                return
            if self.table is None:
                self.table = self.db.create_table(TABLE, data=rows, mode="overwrite")
            else:
                self.table.add(rows)
            self.rows += len(rows)

    adapter = LanceDBAdapter(str(args.db))
    adapter.create_index(dimension=DIM, metric="cosine", index_name=TABLE)
    config = TextEmbedConfig(chunk_size=CHUNK_CHARS, batch_size=32, buffer_size=64)
    embed_anything.embed_directory(
        str(args.corpus),
        embedder=model,
        extensions=[ext.lstrip(".") for ext in EXTENSIONS],  # it matches names without the dot
        config=config,
        adapter=adapter,
    )
    return {"chunks": adapter.rows}


def _job_vectorstream(args: argparse.Namespace, model: Any, quantized: bool) -> dict[str, Any]:
    import vectorstream

    # The loaded model is handed in, so the timed part excludes loading as for the peers.
    report = vectorstream.ingest(
        [str(args.corpus)],
        store=f"lancedb://{args.db}",
        collection=TABLE,
        model=model,
        quantized=quantized,
    )
    return {
        "chunks": report.chunks,
        "tokens_reported": report.tokens,
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "reported_s": report.seconds,
    }


JOBS: dict[str, Callable[[argparse.Namespace, Any], dict[str, Any]]] = {
    "vectorstream-fp32": lambda a, m: _job_vectorstream(a, m, quantized=False),
    "vectorstream-int8": lambda a, m: _job_vectorstream(a, m, quantized=True),
    "sentence-transformers": _job_sentence_transformers,
    "fastembed": _job_fastembed,
    "embed-anything": _job_embed_anything,
}


def _run_job(args: argparse.Namespace) -> dict[str, Any]:
    model, load_s = _timed_load(lambda: LOADERS[args.system](args))
    if args.system == "limit":  # the model alone on vectorstream's own chunk texts
        import numpy as np

        texts = read_texts(args.texts)
        encoded = model.tokenize(texts)  # not timed: the limit is the model on ready batches
        start = time.perf_counter()
        vectors = model.embed_tokenized(encoded)
        job_s = time.perf_counter() - start
        np.save(args.db / "vectors.npy", np.asarray(vectors, dtype=np.float32))
        return {"chunks": len(texts), "load_s": load_s, "job_s": job_s}
    start = time.perf_counter()
    stats = JOBS[args.system](args, model)
    return {**stats, "load_s": load_s, "job_s": time.perf_counter() - start}


# ------------------------------------------------------------------ phase 2: identical texts
# Each returns a zero-argument runner over the texts: what is timed. Work a system needs before
# it (the limit's tokenising) happens here, untimed.


def _prepare_identical(system: str, model: Any, texts: list[str]) -> Callable[[], Any]:
    if system in ("vectorstream-fp32", "vectorstream-int8"):
        return lambda: model.embed(texts)
    if system == "limit":
        encoded = model.tokenize(texts)
        return lambda: model.embed_tokenized(encoded)
    if system == "sentence-transformers":
        return lambda: model.encode(texts)
    if system == "fastembed":
        import numpy as np

        return lambda: np.stack(list(model.embed(texts)))
    if system == "embed-anything":
        import embed_anything
        import numpy as np

        def run() -> Any:
            items = embed_anything.embed_query(texts, embedder=model)
            return np.asarray([item.embedding for item in items], dtype=np.float32)

        return run
    raise ValueError(f"unknown system {system!r}")


def _run_identical(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    texts = read_texts(args.texts)
    model, load_s = _timed_load(lambda: LOADERS[args.system](args))
    _prepare_identical(args.system, model, texts[:WARMUP_TEXTS])()
    run = _prepare_identical(args.system, model, texts)
    start = time.perf_counter()
    vectors = np.asarray(run(), dtype=np.float32)
    embed_s = time.perf_counter() - start
    if vectors.shape[0] != len(texts):
        raise RuntimeError(f"{vectors.shape[0]} vectors for {len(texts)} texts")
    np.save(args.db / "vectors.npy", vectors)
    return {"chunks": len(texts), "load_s": load_s, "embed_s": embed_s}


# ------------------------------------------------------------------ entry point


def child_main(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"system": args.system, "phase": args.phase, "versions": _versions()}
    try:
        args.db.mkdir(parents=True, exist_ok=True)
        if (args.phase == "identical" or args.system == "limit") and args.texts is None:
            raise RuntimeError("this run needs --texts (the parent's chunk texts)")
        stats = _run_identical(args) if args.phase == "identical" else _run_job(args)
        if not stats.get("chunks"):
            raise RuntimeError("the run produced no chunks")
        result.update(stats, ok=True)
    except BaseException as exc:  # the harness reports every failure as a row
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        result["traceback"] = traceback.format_exc()[-3000:]
    write_json(args.result, result)
    return 0 if result.get("ok") else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("--phase", choices=PHASES, required=True)
    p.add_argument("--corpus", type=Path)
    p.add_argument("--db", type=Path, required=True, help="a folder for the store and vectors")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--onnx-dir", type=Path)
    p.add_argument("--texts", type=Path, help="the parent's chunk texts (JSONL)")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return child_main(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
