"""The model sections of ``kinds.py``: each kind beside its reference on identical inputs.

Every system is loaded (and any ONNX export done) before timing. Each section warms every system
up once (those outputs are the ones compared), then runs ``rounds`` rounds in which the systems
alternate (A B C, A B C, …), so a burst of load from elsewhere hits them alike; medians are
reported. ``cpu_s`` is this process's CPU time over a call (all threads; fastembed's is its own
child's), steadier than wall time on a shared machine.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import MIB, run_measured  # noqa: E402
from _kinds_models import (  # noqa: E402
    clip_folder,
    colbert_folder,
    fastembed_colbert,
    rerank_folder,
    splade_folder,
    weights_bytes,
)

REFERENCE_BATCH = 32  # the references' own default batch size (encode, predict; the CLIP loop)
MEMORY_HEADROOM = 300 * MIB


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model sections run: sizes, rounds, threads and where things live."""

    work: Path
    cache: Path
    quick: bool
    rounds: int
    texts: int
    images: int
    threads: int | None
    venvs: Path
    memory_batch: int
    clip_layers: int


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A call answered by a child process: its own CPU seconds stand for this process's."""

    cpu_s: float


@dataclass
class Rounds:
    """Per system: wall and CPU seconds of each timed call, the warm-up output, or its error."""

    walls: dict[str, list[float]] = field(default_factory=dict)
    cpus: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def alternate(runners: Mapping[str, Callable[[], Any]], rounds: int) -> Rounds:
    """Warm each runner up once, then time ``rounds`` rounds of all of them in turn."""
    out = Rounds()
    live: dict[str, Callable[[], Any]] = {}
    for name, run in runners.items():
        try:
            out.outputs[name] = run()
            live[name] = run
        except Exception as exc:  # a system that cannot run is a row with its error
            out.errors[name] = _describe(exc)
    for name in live:
        out.walls[name], out.cpus[name] = [], []
    for _ in range(rounds):
        for name, run in list(live.items()):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                result = run()
            except Exception as exc:
                out.errors[name] = _describe(exc)
                del live[name]
                continue
            out.walls[name].append(time.perf_counter() - wall)
            out.cpus[name].append(
                result.cpu_s if isinstance(result, ChildRun) else time.process_time() - cpu
            )
    return out


def rate_rows(
    rounds: Rounds,
    systems: Sequence[str],
    *,
    unit: str,
    items: int,
    tokens: int | None,
    reference: str,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per system: median seconds, rates, the ratio to ``reference``, and ``extra``."""
    rows: list[dict[str, Any]] = []
    for name in systems:
        row: dict[str, Any] = {"system": name}
        walls = rounds.walls.get(name) or []
        if name in rounds.errors or not walls:
            row.update(ok=False, error=rounds.errors.get(name, "not run"))
            rows.append(row)
            continue
        seconds = statistics.median(walls)
        cpu = statistics.median(rounds.cpus[name])
        row.update(ok=True, seconds=seconds, cpu_s=cpu, items=items)
        row[f"{unit}_per_s"] = items / seconds
        row[f"{unit}_per_cpu_s"] = items / cpu if cpu > 0 else None
        if tokens is not None:
            row["tokens"] = tokens
            row["tokens_per_s"] = tokens / seconds
        row["rounds"] = len(walls)
        row.update((extra or {}).get(name, {}))
        rows.append(row)
    by_name = {r["system"]: r for r in rows if r.get("ok")}
    key = f"{unit}_per_s"
    for row in rows:
        base = by_name.get(reference)
        row["vs_reference"] = (
            row[key] / base[key] if row.get("ok") and base is not None and base[key] else None
        )
    return rows


def ratio(rows: Sequence[Mapping[str, Any]], top: str, bottom: str, key: str) -> float | None:
    """``top``'s ``key`` ÷ ``bottom``'s, or None when either did not run."""
    found = {r["system"]: r for r in rows if r.get("ok")}
    if top not in found or bottom not in found or not found[bottom].get(key):
        return None
    return float(found[top][key]) / float(found[bottom][key])


def chunk_texts(n: int, seed: int = 99, low: int = 20, high: int = 160) -> list[str]:
    """``n`` texts of ``low``-``high`` words in random order, as a chunker's output arrives."""
    from vectorstream.models._checkset import sentence

    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target = rng.randint(low, high)
        words: list[str] = []
        while len(words) < target:
            words += sentence(rng).split()
        texts.append(" ".join(words[:target]))
    return texts


def _threads_for_torch(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return np.asarray((a64 * b64).sum(-1) / np.maximum(den, 1e-12))


def token_agreement(ours: Sequence[Any], theirs: Sequence[Any]) -> dict[str, Any]:
    """Per-token cosines of two systems' multivectors (texts whose row counts differ apart)."""
    cosines: list[np.ndarray] = []
    mismatched = 0
    for a, b in zip(ours, theirs, strict=True):
        a = np.asarray(a, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        if a.shape != b.shape:
            mismatched += 1
            continue
        cosines.append(_cosines(a, b))
    flat = np.concatenate(cosines) if cosines else np.zeros(0)
    return {
        "cos_mean": float(flat.mean()) if flat.size else None,
        "cos_min": float(flat.min()) if flat.size else None,
        "shape_mismatches": mismatched,
    }


def _vector_agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    cos = _cosines(np.asarray(ours), np.asarray(theirs))
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


# -- multivector (ColBERT) ---------------------------------------------------------------------


class FastembedChild:
    """fastembed's ColBERT in its own venv, driven one command per line (``_kinds_fastembed``)."""

    def __init__(self, python: Path, model_dir: Path, texts_file: Path, threads: int) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self._proc = subprocess.Popen(
            [
                str(python),
                str(HERE / "_kinds_fastembed.py"),
                str(model_dir),
                str(texts_file),
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"fastembed did not load: {ready.get('error')}")
        self.load_s = float(ready["load_s"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fastembed child exited ({self._proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and not answer.get("ready"):
            raise RuntimeError(answer["error"])
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._read()

    def run(self) -> ChildRun:
        return ChildRun(cpu_s=float(self.ask("run")["cpu_s"]))

    def vectors(self, path: Path) -> list[np.ndarray]:
        self.ask(f"vectors {path}")
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()


def colbert(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Document tokens/s: vectorstream fp32 and int8, sentence-transformers, fastembed."""
    from sentence_transformers import MultiVectorEncoder

    from vectorstream.models import load_model

    folder = colbert_folder(plan.work, quick=plan.quick)
    log(f"multivector: {folder}")
    fp32 = load_model(str(folder), kind="multivector", cache_dir=plan.cache, threads=plan.threads)
    int8 = load_model(
        str(folder), kind="multivector", quantized=True, cache_dir=plan.cache, threads=plan.threads
    )
    _threads_for_torch(plan.threads)
    st = MultiVectorEncoder(str(folder), device="cpu")
    texts = chunk_texts(plan.texts)
    encodings = fp32.tokenize(texts)
    tokens = sum(len(e.ids) for e in encodings)
    truncated = sum(1 for e in encodings if e.overflowing)

    runners: dict[str, Callable[[], Any]] = {
        "vectorstream-fp32": lambda: [e.multivector for e in fp32.embed(texts)],
        "vectorstream-int8": lambda: [e.multivector for e in int8.embed(texts)],
        "sentence-transformers": lambda: st.encode_document(
            texts, batch_size=REFERENCE_BATCH, convert_to_numpy=True, show_progress_bar=False
        ),
    }
    fastembed: FastembedChild | None = None
    fastembed_error: str | None = None
    python = plan.venvs / "fastembed" / "bin" / "python"
    if python.is_file():
        try:
            onnx_dir = fastembed_colbert(folder, plan.work)
            texts_file = plan.work / "colbert_texts.json"
            texts_file.write_text(json.dumps(texts))
            fastembed = FastembedChild(
                python, onnx_dir, texts_file, plan.threads or len(os.sched_getaffinity(0))
            )
            runners["fastembed"] = fastembed.run
        except Exception as exc:
            fastembed_error = _describe(exc)
    else:
        fastembed_error = f"no virtual environment at {python.parent.parent} (optional peer)"
    systems = [*runners, *(["fastembed"] if "fastembed" not in runners else [])]
    try:
        rounds = alternate(runners, plan.rounds)
        if fastembed is not None and "fastembed" not in rounds.errors:
            rounds.outputs["fastembed"] = fastembed.vectors(plan.work / "fastembed_vectors.npz")
    finally:
        if fastembed is not None:
            fastembed.close()
    if fastembed_error is not None:
        rounds.errors["fastembed"] = fastembed_error
    reference_vectors = rounds.outputs.get("vectorstream-fp32")
    extra: dict[str, dict[str, Any]] = {}
    if reference_vectors is not None:
        for name, vectors in rounds.outputs.items():
            extra[name] = token_agreement(vectors, reference_vectors)
    rows = rate_rows(
        rounds,
        systems,
        unit="texts",
        items=len(texts),
        tokens=tokens,
        reference="sentence-transformers",
        extra=extra,
    )
    return {
        "model": {
            "folder": str(folder),
            "layout": "stanford",
            "dim": fp32.dim,
            "max_tokens": fp32.max_tokens,
            "weights_bytes": weights_bytes(folder),
        },
        "texts": len(texts),
        "tokens": tokens,
        "truncated_texts": truncated,
        "threads": fp32.threads,
        "rows": rows,
    }


# -- sparse (SPLADE) ---------------------------------------------------------------------------


def _sparse_rows(embeddings: Sequence[Any], dim: int) -> np.ndarray:
    out = np.zeros((len(embeddings), dim), dtype=np.float32)
    for row, embedding in enumerate(embeddings):
        out[row, embedding.sparse.indices] = embedding.sparse.values
    return out


def splade(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Texts/s against ``SparseEncoder.encode``, then each one's memory in a fresh process."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    from vectorstream.models import load_model

    folder = splade_folder()
    log(f"sparse: {folder}")
    model = load_model(str(folder), kind="sparse", cache_dir=plan.cache, threads=plan.threads)
    _threads_for_torch(plan.threads)
    # The folder is a plain BertForMaskedLM: the reference is assembled as its docs show.
    reference = SparseEncoder(
        modules=[
            Transformer(str(folder), transformer_task="fill-mask"),
            SpladePooling(pooling_strategy="max"),
        ],
        device="cpu",
    )
    texts = chunk_texts(plan.texts, seed=5)
    tokens = sum(len(e.ids) for e in model.tokenize(texts))

    def reference_run() -> Any:
        return reference.encode(texts, batch_size=REFERENCE_BATCH, show_progress_bar=False)

    rounds = alternate(
        {
            "vectorstream": lambda: _sparse_rows(model.embed(texts), model.dim),
            "sentence-transformers": reference_run,
        },
        plan.rounds,
    )
    extra: dict[str, dict[str, Any]] = {}
    if "vectorstream" in rounds.outputs and "sentence-transformers" in rounds.outputs:
        ours = rounds.outputs["vectorstream"]
        theirs = rounds.outputs["sentence-transformers"]
        theirs = np.asarray(
            theirs.to_dense().cpu().numpy() if hasattr(theirs, "to_dense") else theirs
        )
        for name, vectors in (("vectorstream", ours), ("sentence-transformers", theirs)):
            extra[name] = _vector_agreement(vectors, ours)
    rows = rate_rows(
        rounds,
        ["vectorstream", "sentence-transformers"],
        unit="texts",
        items=len(texts),
        tokens=tokens,
        reference="sentence-transformers",
        extra=extra,
    )
    memory = splade_memory(plan, folder, log)
    return {
        "model": {
            "folder": str(folder),
            "vocabulary": model.dim,
            "max_tokens": model.max_tokens,
            "weights_bytes": weights_bytes(folder),
        },
        "texts": len(texts),
        "tokens": tokens,
        "threads": model.threads,
        "rows": rows,
        "memory": memory,
    }


def splade_memory(plan: Plan, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """RSS growth of a fresh process loading the model and embedding one full-window batch."""
    size = weights_bytes(folder)
    rows: list[dict[str, Any]] = []
    for system in ("vectorstream", "reference"):
        log(f"sparse memory: {system}, batch {plan.memory_batch}")
        cmd = [
            sys.executable,
            str(HERE / "_kinds_child.py"),
            "splade-memory",
            "--system",
            system,
            "--model",
            str(folder),
            "--cache",
            str(plan.cache),
            "--batch",
            str(plan.memory_batch),
            "--threads",
            str(plan.threads or 0),
        ]
        measured = run_measured(cmd, timeout=900)
        row: dict[str, Any] = {"system": system}
        try:
            if measured.returncode != 0:
                raise RuntimeError(measured.stderr_tail[-600:] or f"exit {measured.returncode}")
            found = json.loads(measured.stdout_tail.strip().splitlines()[-1])
            row.update(
                ok=True,
                texts=found["texts"],
                tokens_per_text=found["tokens"] / max(found["texts"], 1),
                baseline_mib=found["baseline_bytes"] / MIB,
                after_load_mib=found["after_load_bytes"] / MIB,
                peak_mib=found["peak_bytes"] / MIB,
                growth_mib=found["growth_bytes"] / MIB,
                embed_s=found["embed_s"],
            )
        except (RuntimeError, ValueError, KeyError, IndexError) as exc:
            row.update(ok=False, error=_describe(exc))
        rows.append(row)
    return {
        "batch": plan.memory_batch,
        "weights_mib": size / MIB,
        "target_mib": (size + MEMORY_HEADROOM) / MIB,
        "rows": rows,
    }


# -- image (CLIP) ------------------------------------------------------------------------------


def write_images(directory: Path, n: int, seed: int = 21) -> list[Path]:
    """``n`` JPEG photos-like pictures of the sizes cameras and pages give (decoding counts)."""
    from PIL import Image

    from _clip_support import picture

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = [(640, 480), (480, 640), (1024, 768), (800, 800), (1280, 720), (320, 240)]
    paths = []
    for i in range(n):
        path = directory / f"image-{i:04d}.jpg"
        if not path.is_file():
            width, height = rng.choice(sizes)
            Image.fromarray(picture(width, height, seed + i)).save(path, quality=90)
        else:
            rng.choice(sizes)  # the same sequence whether or not the file exists
        paths.append(path)
    return paths


def clip(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Images/s: ``embed_images(paths)`` against a transformers loop over batches of 32."""
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from vectorstream.models import load_model
    from vectorstream.models._backends import quiet_transformers

    folder = clip_folder(plan.work, quick=plan.quick, layers=plan.clip_layers)
    log(f"image: {folder}")
    model = load_model(str(folder), kind="image", cache_dir=plan.cache, threads=plan.threads)
    _threads_for_torch(plan.threads)
    with quiet_transformers():
        processor = CLIPProcessor.from_pretrained(str(folder))
        reference = CLIPModel.from_pretrained(str(folder)).eval()
    paths = write_images(plan.work / "images", plan.images)

    def reference_run() -> np.ndarray:
        out = []
        for start in range(0, len(paths), REFERENCE_BATCH):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + REFERENCE_BATCH]]
            inputs = processor(images=images, return_tensors="pt")
            with torch.inference_mode():
                features = reference.get_image_features(pixel_values=inputs["pixel_values"])
            features = features if hasattr(features, "shape") else features.pooler_output
            out.append(features.numpy())
        return np.concatenate(out)

    rounds = alternate(
        {"vectorstream": lambda: model.embed_images(paths), "transformers": reference_run},
        plan.rounds,
    )
    extra: dict[str, dict[str, Any]] = {}
    if "vectorstream" in rounds.outputs:
        for name, vectors in rounds.outputs.items():
            extra[name] = _vector_agreement(vectors, rounds.outputs["vectorstream"])
    rows = rate_rows(
        rounds,
        ["vectorstream", "transformers"],
        unit="images",
        items=len(paths),
        tokens=None,
        reference="transformers",
        extra=extra,
    )
    return {
        "model": {
            "folder": str(folder),
            "vision_layers": None if plan.quick else plan.clip_layers,
            "dim": model.dim,
            "weights_bytes": weights_bytes(folder),
        },
        "images": len(paths),
        "threads": model.threads,
        "rows": rows,
    }


# -- rerank (cross-encoder) --------------------------------------------------------------------


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else 1.0


def rerank(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Pairs/s: ``Reranker.score(pairs)`` against ``CrossEncoder.predict``."""
    from sentence_transformers import CrossEncoder

    from vectorstream.models import load_model
    from vectorstream.models._checkset import sentence

    folder = rerank_folder(plan.work, quick=plan.quick)
    log(f"rerank: {folder}")
    model = load_model(str(folder), kind="rerank", cache_dir=plan.cache, threads=plan.threads)
    _threads_for_torch(plan.threads)
    reference = CrossEncoder(str(folder), device="cpu")
    rng = random.Random(17)
    texts = chunk_texts(plan.texts, seed=17)
    pairs = [(sentence(rng), text) for text in texts]
    tokens = sum(len(e.ids) for e in model.tokenize_pairs(pairs))

    rounds = alternate(
        {
            "vectorstream": lambda: np.asarray(model.score(pairs)),
            "sentence-transformers": lambda: np.asarray(
                reference.predict(pairs, batch_size=REFERENCE_BATCH, show_progress_bar=False)
            ),
        },
        plan.rounds,
    )
    extra: dict[str, dict[str, Any]] = {}
    if "vectorstream" in rounds.outputs:
        ours = rounds.outputs["vectorstream"].astype(np.float64)
        for name, scores in rounds.outputs.items():
            theirs = np.asarray(scores, dtype=np.float64).reshape(ours.shape)
            extra[name] = {
                "max_abs_diff": float(np.abs(theirs - ours).max()),
                "spearman": _spearman(theirs, ours),
            }
    rows = rate_rows(
        rounds,
        ["vectorstream", "sentence-transformers"],
        unit="pairs",
        items=len(pairs),
        tokens=tokens,
        reference="sentence-transformers",
        extra=extra,
    )
    return {
        "model": {
            "folder": str(folder),
            "max_tokens": model.max_tokens,
            "weights_bytes": weights_bytes(folder),
        },
        "pairs": len(pairs),
        "tokens": tokens,
        "threads": model.threads,
        "rows": rows,
    }


SECTIONS: dict[str, Callable[[Plan, Callable[[str], None]], dict[str, Any]]] = {
    "colbert": colbert,
    "splade": splade,
    "clip": clip,
    "rerank": rerank,
}

__all__ = [
    "SECTIONS",
    "ChildRun",
    "Plan",
    "Rounds",
    "alternate",
    "chunk_texts",
    "rate_rows",
    "ratio",
    "token_agreement",
]
