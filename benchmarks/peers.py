"""vectorstream against the pipelines a user would pick instead, on one corpus, model and machine.

    python benchmarks/peers.py                 # default corpus, 3 rounds, both phases
    python benchmarks/peers.py --quick         # a tiny corpus: proves the harness works
    python benchmarks/peers.py --systems vectorstream-fp32,limit --repeats 1 --phase identical

Two comparisons, because chunkers differ and a model's speed per token depends on how long its
inputs are, so tokens/s of different chunks are not like for like:

1. ``job``: the whole job, each tool with its own defaults, files → LanceDB, with
   all-MiniLM-L6-v2 on CPU. vectorstream fp32 and int8 ingest with their own chunker; fastembed and
   sentence-transformers run a user's plain loop (usual parsers, ~1,000-character chunks);
   EmbedAnything runs its own file pipeline with its own chunking; ``limit`` is the model alone on
   vectorstream's own chunk texts (so "pipeline ÷ model alone" is one ratio). Reported: job time,
   files, chunks, tokens, chunks/s, peak RSS of the process tree, and each tool's chunk lengths.
2. ``identical``: the parent chunks the corpus once with vectorstream's default chunker (public
   API) into one JSONL list of texts; every system embeds exactly that list in its own batching.
   Tokens are counted once, so every row has the same token count and tokens/s compares the
   models' runtimes alone. Agreement is the cosine to vectorstream fp32's vectors for each text.

Every run is its own subprocess (peers in their own virtual environments under
``benchmarks/.venvs``), so each run's peak RSS is its own. Each round runs the job phase for every
system (A B C …), then the identical phase (A B C …); medians over the rounds are reported.
``benchmarks/_peers_child.py`` is the child; ``_peers_report.py`` writes the markdown and chart.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    machine_info,
    median,
    mib,
    minilm_dir,
    percentile,
    run_measured,
)
from _peers_child import (  # noqa: E402
    CHUNK_CHARS,
    IDENTICAL_BATCHING,
    MAX_TOKENS,
    MODEL_ID,
    PHASES,
    REVISION,
    SYSTEMS,
    TABLE,
    WARMUP_TEXTS,
)
from _peers_report import print_tables, write_outputs  # noqa: E402

CHILD = HERE / "_peers_child.py"
REFERENCE = "vectorstream-fp32"
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
SIZES: dict[str, int] = {"quick": 5, "small": 15, "default": 40, "large": 120}
SHORT_FRACTION = 0.25  # a chunk under a quarter of the token budget counts as short

# (goal, table, (numerator system, denominator system), metric, comparison, threshold)
Goal = tuple[str, str, tuple[str, str], str, str, float]
GOALS: tuple[Goal, ...] = (
    (
        "vectorstream fp32 ÷ fastembed (tokens/s)",
        "identical",
        ("vectorstream-fp32", "fastembed"),
        "tokens_per_s",
        ">=",
        1.0,
    ),
    (
        "vectorstream fp32 ÷ sentence-transformers (tokens/s)",
        "identical",
        ("vectorstream-fp32", "sentence-transformers"),
        "tokens_per_s",
        ">=",
        1.5,
    ),
    (
        "vectorstream int8 ÷ vectorstream fp32 (tokens/s)",
        "identical",
        ("vectorstream-int8", "vectorstream-fp32"),
        "tokens_per_s",
        ">=",
        1.7,
    ),
    (
        "vectorstream fp32 job time ÷ fastembed's",
        "job",
        ("vectorstream-fp32", "fastembed"),
        "job_s",
        "<",
        1.0,
    ),
    (
        "vectorstream fp32 job time ÷ EmbedAnything's",
        "job",
        ("vectorstream-fp32", "embed-anything"),
        "job_s",
        "<",
        1.0,
    ),
    (
        "pipeline ÷ model alone on its own chunks (tokens/s)",
        "job",
        ("vectorstream-fp32", "limit"),
        "tokens_per_s",
        ">=",
        0.9,
    ),
)
# Ratios shown under the identical-texts table (this ÷ that, tokens/s).
IDENTICAL_RATIOS: tuple[tuple[str, str], ...] = (
    ("vectorstream-fp32", "fastembed"),
    ("vectorstream-fp32", "sentence-transformers"),
    ("vectorstream-int8", "vectorstream-fp32"),
    ("vectorstream-fp32", "limit"),
)
INT8_MIN_COSINE = 0.99
RSS_SCALING_MAX = 1.15


def _log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


# ======================================================================== set-up


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


# ======================================================================== the identical texts


def write_identical_texts(corpus: Path, model_dir: Path, path: Path) -> dict[str, Any]:
    """Chunk ``corpus`` with vectorstream's default chunker and write the texts to ``path`` (JSONL).

    Only public API: the sources walk, the default parsers, and ``make_chunker`` with default
    ``ChunkOptions`` and the model's limits, as an ingest with default options does. A file that
    fails to parse or chunk is left out, as the pipeline leaves it out.
    """
    from vectorstream.chunking import ChunkOptions, load_tokenizer, make_chunker
    from vectorstream.models import read_folder
    from vectorstream.parsers import parse
    from vectorstream.sources import iter_files

    options = ChunkOptions()
    tokenizer = load_tokenizer(model_dir)
    max_tokens = read_folder(model_dir).max_tokens
    special = tokenizer.num_special_tokens_to_add(False)
    rows: list[dict[str, str]] = []
    failed: dict[str, str] = {}
    for source in iter_files([corpus]):
        chunker = make_chunker(options, tokenizer, max_tokens, num_special_tokens=special)
        try:
            mine = [{"source": source.uri, "text": c.text} for c in chunker.chunk(parse(source))]
        except Exception as exc:
            failed[source.uri] = f"{type(exc).__name__}: {exc}"
            continue
        rows.extend(mine)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {
        "file": str(path),
        "chunks": len(rows),
        "files": len({r["source"] for r in rows}),
        "files_failed": failed,
        "chunk_options": dataclasses.asdict(options),
        "max_tokens": max_tokens,
        "num_special_tokens": special,
    }


def read_identical_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def chunk_stats(lengths: Sequence[int], budget: int) -> dict[str, Any]:
    """Token lengths of one system's chunks: spread, and the shares far under or over the budget."""
    if not lengths:
        return {"chunks": 0}
    n = len(lengths)
    return {
        "chunks": n,
        "median": median(lengths),
        "mean": sum(lengths) / n,
        "p10": percentile(lengths, 10),
        "p90": percentile(lengths, 90),
        "max": max(lengths),
        "short_share": sum(1 for x in lengths if x < budget * SHORT_FRACTION) / n,
        "over_budget_share": sum(1 for x in lengths if x > budget) / n,
    }


# ======================================================================== running the systems


class Harness:
    """Runs the systems in rounds and reads their results and stores back."""

    def __init__(self, args: argparse.Namespace) -> None:
        from tokenizers import Tokenizer

        self.args = args
        self.work: Path = args.work
        self.model_dir: Path = args.model_dir
        self.runs: list[dict[str, Any]] = []
        self.setup_errors: dict[str, str] = {}
        self.pythons: dict[str, Path] = {}
        self.onnx_dir: Path | None = None
        self.hf_home: Path | None = None
        self.texts_file = self.work / "identical_texts.jsonl"
        self.texts_error: str | None = None
        self.identical: dict[str, Any] = {}
        self.identical_texts: list[str] = []
        self.identical_sources: list[str] = []
        self.identical_tokens = 0
        self.reference_vectors: Any = None
        self.chunk_lengths: dict[str, list[int]] = {}
        # What the model sees: special tokens added, cut at the model's limit.
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        # A chunk's own length: no special tokens, no cut, so chunks over the budget show.
        self.counter = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.counter.no_truncation()
        self.counter.no_padding()
        self.budget = MAX_TOKENS - self.counter.num_special_tokens_to_add(False)

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

    def prepare_texts(self, corpus: Path) -> None:
        """The one list of chunk texts every system embeds in the identical phase."""
        self.texts_file.unlink(missing_ok=True)
        try:
            self.identical = write_identical_texts(corpus, self.model_dir, self.texts_file)
        except Exception as exc:
            self.texts_error = f"no identical texts: {type(exc).__name__}: {exc}"
            _log(self.texts_error)
            return
        rows = read_identical_rows(self.texts_file)
        self.identical_texts = [r["text"] for r in rows]
        self.identical_sources = [r["source"] for r in rows]
        self.identical_tokens = self._count_tokens(self.identical_texts)
        self.identical.update(
            tokens=self.identical_tokens,
            stats=chunk_stats(self._lengths(self.identical_texts), self.budget),
            same_as_pipeline=None,
        )
        _log(
            f"identical texts: {len(rows)} chunks, {self.identical_tokens} tokens "
            f"from {self.identical['files']} files"
        )

    # -------------------------------------------------------------- one run

    def run_one(
        self, system: str, phase: str, corpus: Path, label: str, round_no: int
    ) -> dict[str, Any]:
        db = self.work / "db" / phase / label / system
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True)
        result_file = db.parent / f"{system}.result.json"
        result_file.unlink(missing_ok=True)
        needs_texts = phase == "identical" or system == "limit"
        if needs_texts and not self.identical_texts:
            row = self._row(system, phase, label, round_no, self.texts_error or "no chunk texts")
            self.runs.append(row)
            return row
        cmd = [
            str(self.pythons[system]),
            str(CHILD),
            system,
            "--phase",
            phase,
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
        if needs_texts:
            cmd += ["--texts", str(self.texts_file)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "PYTHONWARNINGS": "ignore"}
        if self.hf_home is not None:
            env.update(HF_HOME=str(self.hf_home), HF_HUB_OFFLINE="1")
        _log(f"round {round_no} {phase} {label}: {system}")
        measured = run_measured(cmd, env=env, timeout=self.args.timeout)
        try:
            child = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError):
            reason = "timed out" if measured.timed_out else f"exit code {measured.returncode}"
            child = {"ok": False, "error": f"no result ({reason}): {measured.stderr_tail[-600:]}"}
        row = self._row(system, phase, label, round_no, None if child.get("ok") else child["error"])
        row.update(
            process_s=measured.wall_s,
            peak_rss_mib=mib(measured.peak_rss_bytes),
            versions=child.get("versions", {}),
        )
        if child.get("ok"):
            try:
                if phase == "job":
                    self._read_job(row, child, db, label)
                else:
                    self._read_identical(row, child, db)
            except Exception as exc:  # a store or vectors the parent cannot read: a failed row
                row.update(ok=False, error=f"reading the results: {type(exc).__name__}: {exc}")
        if not row["ok"]:
            _log(f"{system} {phase} failed: {str(row['error'])[:300]}")
        self.runs.append(row)
        return row

    def _row(
        self, system: str, phase: str, label: str, round_no: int, error: str | None
    ) -> dict[str, Any]:
        return {
            "system": system,
            "phase": phase,
            "corpus": label,
            "round": round_no,
            "ok": error is None,
            "error": error,
        }

    def _read_job(self, row: dict[str, Any], child: dict[str, Any], db: Path, label: str) -> None:
        row.update({k: child.get(k) for k in ("load_s", "job_s", "files_failed", "reported_s")})
        if row["system"] == "limit":
            texts, sources = self.identical_texts, self.identical_sources
        else:
            texts, sources = self._stored(db)
        row["files"] = len(set(sources))
        row["chunks"] = len(texts)
        row["tokens"] = self._count_tokens(texts)
        if row["job_s"]:
            row["chunks_per_s"] = row["chunks"] / row["job_s"]
            row["tokens_per_s"] = row["tokens"] / row["job_s"]
        if label != "x1":
            return
        if row["system"] not in self.chunk_lengths:
            self.chunk_lengths[row["system"]] = self._lengths(texts)
        if row["system"] == REFERENCE and self.identical.get("same_as_pipeline") is None:
            # The identical list stands for the pipeline's own chunks: say whether it still does.
            same = collections.Counter(texts) == collections.Counter(self.identical_texts)
            self.identical["same_as_pipeline"] = same
            if not same:
                _log("the identical texts differ from what the vectorstream pipeline stored")

    def _read_identical(self, row: dict[str, Any], child: dict[str, Any], db: Path) -> None:
        import numpy as np

        row.update({k: child.get(k) for k in ("load_s", "embed_s", "chunks")})
        row["tokens"] = self.identical_tokens
        if row["embed_s"]:
            row["chunks_per_s"] = row["chunks"] / row["embed_s"]
            row["tokens_per_s"] = row["tokens"] / row["embed_s"]
        vectors = np.load(db / "vectors.npy")
        if row["system"] == REFERENCE and self.reference_vectors is None:
            self.reference_vectors = vectors
        if self.reference_vectors is not None and vectors.shape == self.reference_vectors.shape:
            cos = _cosines(vectors, self.reference_vectors)
            row.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))

    def _table(self, db: Path) -> Any:
        import lancedb

        conn = lancedb.connect(str(db))
        names = list(conn.list_tables().tables)
        if not names:
            return None
        name = TABLE if TABLE in names else names[0]
        return conn.open_table(name).to_arrow()

    def _stored(self, db: Path) -> tuple[list[str], list[str]]:
        table = self._table(db)
        if table is None:
            return [], []
        return table.column("text").to_pylist(), table.column("source").to_pylist()

    def _count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(texts)))

    def _lengths(self, texts: Sequence[str]) -> list[int]:
        encoded = self.counter.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]


def _cosines(a: Any, b: Any) -> Any:
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


# ======================================================================== summaries and goals

COUNT_KEYS = frozenset({"files", "chunks", "tokens"})
JOB_KEYS = (
    "job_s",
    "process_s",
    "load_s",
    "files",
    "chunks",
    "tokens",
    "chunks_per_s",
    "tokens_per_s",
    "peak_rss_mib",
)
IDENTICAL_KEYS = (
    "embed_s",
    "process_s",
    "load_s",
    "chunks",
    "tokens",
    "chunks_per_s",
    "tokens_per_s",
    "peak_rss_mib",
    "cos_mean",
)


def _medians(
    runs: Sequence[dict[str, Any]],
    system: str,
    phase: str,
    keys: Sequence[str],
    setup_errors: dict[str, str],
) -> dict[str, Any]:
    if system in setup_errors:
        return {"system": system, "ok": False, "error": setup_errors[system], "runs": 0}
    mine = [
        r for r in runs if r["system"] == system and r["phase"] == phase and r["corpus"] == "x1"
    ]
    good = [r for r in mine if r["ok"]]
    row: dict[str, Any] = {"system": system, "runs": len(good), "ok": bool(good)}
    if not good:
        row["error"] = mine[-1]["error"] if mine else "not run"
        return row
    for key in keys:
        value = median([r[key] for r in good if r.get(key) is not None])
        # Counts stay whole numbers in the tables (the median of two equal counts is a float).
        row[key] = int(value) if key in COUNT_KEYS and value is not None else value
    row["failed_runs"] = len(mine) - len(good)
    return row


def summarise_job(
    runs: Sequence[dict[str, Any]], systems: Sequence[str], setup_errors: dict[str, str]
) -> list[dict[str, Any]]:
    """Table 1: medians per system, and vectorstream fp32's job time over each system's."""
    rows = [_medians(runs, s, "job", JOB_KEYS, setup_errors) for s in systems]
    for row in rows:
        if row["ok"]:
            failed = [r.get("files_failed") for r in runs if r["system"] == row["system"]]
            row["files_failed"] = next((f for f in failed if f is not None), None)
    base = next((r for r in rows if r["system"] == REFERENCE and r["ok"]), None)
    for row in rows:
        if base and row.get("job_s") and base.get("job_s"):
            row["fp32_time_ratio"] = base["job_s"] / row["job_s"]
            row["rss_vs_fp32"] = row["peak_rss_mib"] / base["peak_rss_mib"]
    return rows


def summarise_identical(
    runs: Sequence[dict[str, Any]], systems: Sequence[str], setup_errors: dict[str, str]
) -> list[dict[str, Any]]:
    """Table 2: medians per system on the same texts, speed against fp32 and agreement with it."""
    rows = [_medians(runs, s, "identical", IDENTICAL_KEYS, setup_errors) for s in systems]
    base = next((r for r in rows if r["system"] == REFERENCE and r["ok"]), None)
    for row in rows:
        row["batching"] = IDENTICAL_BATCHING.get(row["system"])
        mins = [
            r["cos_min"]
            for r in runs
            if r["system"] == row["system"] and r["phase"] == "identical" and "cos_min" in r
        ]
        if mins:
            row["cos_min"] = min(mins)  # the worst text over every round
        if base and row.get("tokens_per_s") and base.get("tokens_per_s"):
            row["vs_fp32"] = row["tokens_per_s"] / base["tokens_per_s"]
    return rows


def _ratio(rows: Sequence[dict[str, Any]], a: str, b: str, metric: str) -> float | None:
    by = {r["system"]: r for r in rows if r.get("ok")}
    if a in by and b in by and by[a].get(metric) and by[b].get(metric):
        return float(by[a][metric]) / float(by[b][metric])
    return None


def identical_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"ratio": f"{a} ÷ {b} (tokens/s)", "value": _ratio(rows, a, b, "tokens_per_s")}
        for a, b in IDENTICAL_RATIOS
    ]


def _met(value: float | None, comparison: str, threshold: float) -> bool | None:
    if value is None:
        return None
    return {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[comparison]


def goals(
    job: Sequence[dict[str, Any]],
    identical: Sequence[dict[str, Any]],
    scaling: dict[str, Any],
) -> list[dict[str, Any]]:
    tables = {"job": job, "identical": identical}
    out: list[dict[str, Any]] = []

    def add(name: str, table: str, value: float | None, comparison: str, limit: float) -> None:
        out.append(
            {
                "goal": name,
                "table": table,
                "value": value,
                "target": f"{comparison.replace('>=', '≥').replace('<=', '≤')} {limit}",
                "met": _met(value, comparison, limit),
            }
        )

    for name, table, (a, b), metric, comparison, limit in GOALS:
        add(name, table, _ratio(tables[table], a, b, metric), comparison, limit)
    int8 = next((r for r in identical if r["system"] == "vectorstream-int8"), {})
    add(
        "vectorstream int8 mean cosine to fp32",
        "identical",
        int8.get("cos_mean"),
        ">=",
        INT8_MIN_COSINE,
    )
    ratio = scaling.get(REFERENCE, {}).get("ratio")
    add("vectorstream fp32 peak RSS ×N ÷ ×1", "memory", ratio, "<=", RSS_SCALING_MAX)
    return out


# ======================================================================== main


def _memory_scaling(
    harness: Harness, ready: Sequence[str], documents: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Peak RSS of the job on a corpus ``--scale-factor`` times larger, against the ×1 runs."""
    from vectorstream.samples import build_sample_corpus

    chosen = {
        "none": [],
        "vectorstream": [s for s in ready if s.startswith("vectorstream")],
        "all": [s for s in ready if s != "limit"],  # the limit has no files to scale
    }[args.memory_scaling]
    if not chosen or "job" not in args.phases:
        return {}
    big = build_sample_corpus(
        args.work / f"corpus-x{args.scale_factor}",
        documents=documents,
        scale=args.scale_factor,
        seed=args.seed,
    )
    scaling: dict[str, Any] = {}
    for system in chosen:
        row = harness.run_one(system, "job", big.path, "x10", 1)
        x1 = median(
            [
                r["peak_rss_mib"]
                for r in harness.runs
                if r["system"] == system and r["phase"] == "job" and r["corpus"] == "x1" and r["ok"]
            ]
        )
        entry: dict[str, Any] = {"x1_peak_rss_mib": x1, "x10_files": big.files}
        if row["ok"]:
            entry["x10_peak_rss_mib"] = row["peak_rss_mib"]
            entry["ratio"] = row["peak_rss_mib"] / x1 if x1 else None
            entry["x10_job_s"] = row.get("job_s")
        else:
            entry["error"] = row["error"]
        scaling[system] = entry
    return scaling


def parent_main(args: argparse.Namespace) -> int:
    from vectorstream.samples import build_sample_corpus

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        _log(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
        return 2
    # Keep the canonical order: the reference runs first in each round, the limit last.
    systems = [s for s in SYSTEMS if s in systems]
    documents = args.documents or SIZES["quick" if args.quick else args.size]
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = build_sample_corpus(args.work / "corpus-x1", documents=documents, seed=args.seed)
    _log(f"corpus: {corpus.files} files, {corpus.bytes / 2**20:.2f} MiB")
    machine = machine_info()
    harness = Harness(args)
    ready = harness.setup(systems)
    harness.prepare_texts(corpus.path)
    started = time.perf_counter()
    for round_no in range(1, args.repeats + 1):
        for phase in args.phases:
            for system in ready:
                harness.run_one(system, phase, corpus.path, "x1", round_no)
    scaling = _memory_scaling(harness, ready, documents, args)

    job = summarise_job(harness.runs, systems, harness.setup_errors) if "job" in args.phases else []
    identical = (
        summarise_identical(harness.runs, systems, harness.setup_errors)
        if "identical" in args.phases
        else []
    )
    chunk_systems = [s for s in systems if s in harness.chunk_lengths]
    versions: dict[str, str] = {}
    for run in harness.runs:
        versions.update(run.get("versions") or {})
    data: dict[str, Any] = {
        "machine": machine,
        "versions": versions,
        "config": {
            "documents": documents,
            "repeats": args.repeats,
            "phases": list(args.phases),
            "threads": args.threads,
            "scale_factor": args.scale_factor,
            "systems": systems,
            "seed": args.seed,
            "chunk_chars_plain_loops": CHUNK_CHARS,
            "token_budget": harness.budget,
            "short_fraction": SHORT_FRACTION,
            "warmup_texts": WARMUP_TEXTS,
            "bench_seconds": time.perf_counter() - started,
            "git": _git_state(),
            "loadavg_end": round(os.getloadavg()[0], 2),
        },
        "corpus": {
            "files": corpus.files,
            "bytes": corpus.bytes,
            "by_format": dict(corpus.by_format),
        },
        "identical_texts": harness.identical,
        "job": job,
        "chunk_stats": {
            s: chunk_stats(harness.chunk_lengths[s], harness.budget) for s in chunk_systems
        },
        "identical": identical,
        "identical_ratios": identical_ratios(identical),
        "memory_scaling": scaling,
        "runs": harness.runs,
    }
    data["goals"] = goals(job, identical, scaling)
    write_outputs(data, args.out, args.report)
    print_tables(data)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        "--phase",
        choices=(*PHASES, "both"),
        default="both",
        help="job: files → store with each tool's defaults; identical: the same chunk texts",
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
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.phases = PHASES if args.phase == "both" else (args.phase,)
    args.report = None if str(args.report) == "-" else args.report
    args.model_dir = args.model_dir or minilm_dir()
    args.work = args.work.resolve()
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
