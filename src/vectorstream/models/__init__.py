"""Embedding models: resolve offline, run on ONNX Runtime (default) or torch, match the reference.

    load_model(spec) ─▶ resolve (local / HF cache / package / hub) ─▶ read the folder
                     ─▶ pick a graph (folder's onnx/, cache, or export one now) ─▶ Embedder

The heavy imports (onnxruntime, torch) happen inside ``load_model``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..errors import ConfigError, ModelError
from ._backends import Backend, OnnxBackend, TorchBackend, torch_available
from ._catalog import CATALOG, Catalog, CatalogEntry
from ._checkset import check_texts
from ._embedder import DEFAULT_TOKEN_BUDGET, Embedder, token_budget_batches
from ._export import FP32_NAME, GATE_NAME, INT8_NAME, export_dir, export_fp32
from ._folder import ModelFolder, read_folder, weights_identity
from ._gate import MIN_COSINE, MIN_MEAN_COSINE, GateReport, cosine_rows, ensure_int8
from ._kinds import MODEL_KINDS, check_kind, detect_kind, loader
from ._pooling import PRECISIONS
from ._resolve import ResolvedModel, cached_hub_models, hf_hub_cache, hub_offline, resolve
from ._threads import available_cores

log = logging.getLogger("vectorstream.models")

BACKENDS: tuple[str, ...] = ("onnx", "torch")


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Where ``export_model`` left the graphs, and the int8 gate's figures when quantised."""

    model_id: str
    fp32_path: Path
    int8_path: Path | None = None
    gate: GateReport | None = None
    output: Path | None = None  # the self-contained ONNX folder, when one was asked for


# What a self-contained ONNX folder needs besides the graphs: configs, tokenizer, pooling.
_FOLDER_FILES = ("*.json", "*.txt", "*.model", "1_Pooling/*.json", "2_Normalize/*.json")


def _write_onnx_folder(
    folder: ModelFolder, fp32: Path, int8: Path | None, report_dir: Path | None, output: Path
) -> Path:
    """Copy configs, tokenizer and graphs into ``output``: a folder that loads without torch."""
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"output folder {output} exists and is not empty")
    (output / "onnx").mkdir(parents=True, exist_ok=True)
    roots = {folder.path, folder.transformer_path}
    for root in roots:
        for pattern in _FOLDER_FILES:
            for item in root.glob(pattern):
                if item.is_file():
                    target = output / item.relative_to(folder.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(item, target)
    shutil.copyfile(fp32, output / "onnx" / FP32_NAME)
    if int8 is not None:
        shutil.copyfile(int8, output / "onnx" / INT8_NAME)
        if report_dir is not None and (report_dir / GATE_NAME).is_file():
            shutil.copyfile(report_dir / GATE_NAME, output / "onnx" / GATE_NAME)
    return output


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(os.path.expanduser(cache_dir)) if cache_dir else load_settings().cache_path


def _fp32_graph(
    resolved: ResolvedModel, folder: ModelFolder, identity: str, cache: Path, *, export: bool
) -> Path | None:
    """The fp32 graph to run: the folder's own, one exported earlier, or (``export``) a new one."""
    if folder.onnx_path is not None:
        return folder.onnx_path
    cached = export_dir(cache, resolved.model_id, identity) / FP32_NAME
    if cached.is_file():
        return cached
    if not export:
        return None
    try:
        return export_fp32(folder, cached)
    except OSError as exc:  # an unwritable cache, a full disk: a model problem to the caller
        raise ModelError(f"cannot export {resolved.model_id} into {cached.parent}: {exc}") from exc


def resolve_model(
    spec: str | os.PathLike[str] | None = None, *, allow_download: bool = True
) -> ResolvedModel:
    """Where ``spec`` (default: the configured model) is found, without loading it.

    ``allow_download=False`` looks only on this machine, even when the hub is reachable.
    """
    return resolve(
        spec if spec is not None else load_settings().model, allow_download=allow_download
    )


def load_model(
    spec: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    quantized: bool = False,
    *,
    normalize: bool | None = None,
    dimensions: int | None = None,
    precision: str = "float32",
    threads: int | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    cache_dir: str | os.PathLike[str] | None = None,
    kind: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Load a model, ready to ``embed`` (or, for a reranker, to ``rerank``).

    ``kind``: dense, sparse, multivector, image or rerank; None reads it from the folder's own
    files (dense when they say nothing else). A dense model is an :class:`Embedder`; the other
    kinds come from their modules (``_sparse``, ``_colbert``, ``_clip``, ``_rerank``) and take
    their own settings in ``options`` (for example ``{"top_k": 128}`` for sparse).

    ``spec``: a folder, a hub id, or a catalogue alias (default: the configured model).
    ``backend``: "onnx", "torch" or None (ONNX whenever a graph exists or can be exported).
    ``quantized``: run the gated int8 graph (ONNX only). ``normalize``: None follows the model.
    ``dimensions``: Matryoshka truncation (renormalised when normalising). ``precision``: float32,
    float16, int8 or binary (packed bits). ``threads``: inference threads (None: the cores this
    process may use, or ``VECTORSTREAM_THREADS``).
    """
    settings = load_settings()
    chosen = backend.strip().lower() if backend else settings.backend
    if chosen not in (None, *BACKENDS):
        raise ConfigError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if dimensions is not None and dimensions < 1:
        raise ConfigError(f"dimensions must be a positive number, got {dimensions}")
    if token_budget < 1:
        raise ConfigError(f"token_budget must be positive, got {token_budget}")
    if quantized and chosen == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    threads = threads if threads is not None else (settings.threads or None)
    cache = _cache_dir(cache_dir or settings.cache_dir)

    resolved = resolve(spec if spec is not None else settings.model)
    chosen_kind = check_kind(kind) or detect_kind(resolved.path)
    if chosen_kind != "dense":
        if dimensions is not None or normalize is not None or precision != "float32":
            raise ConfigError(
                f"dimensions, normalize and precision apply to dense models; a {chosen_kind} "
                "model takes its settings in options"
            )
        model = loader(chosen_kind)(
            resolved.path,
            resolved.model_id,
            backend=chosen,
            quantized=quantized,
            threads=threads,
            cache=cache,
            **dict(options or {}),
        )
        log.info("loaded %r from %s (%s)", model, resolved.path, resolved.origin)
        return model
    if options:
        raise ConfigError(f"a dense model takes no options, got {sorted(options)}")
    folder = read_folder(resolved.path)
    if dimensions is not None and dimensions > folder.dim:
        raise ConfigError(f"dimensions={dimensions} exceeds the model's {folder.dim}")
    identity = weights_identity(folder)
    can_export = torch_available()

    impl: Backend
    if chosen == "torch":
        impl = TorchBackend(folder.transformer_path, threads)
    else:
        graph: Path | None
        try:
            graph = _fp32_graph(resolved, folder, identity, cache, export=can_export)
        except ModelError as exc:
            if chosen == "onnx" or quantized:
                raise
            # Automatic mode: a failed export must not stop the user; torch still works.
            log.warning("ONNX export failed (%s); using the torch backend", exc)
            graph = None
        if graph is None and (chosen == "onnx" or quantized):
            raise ModelError(
                f"{resolved.model_id} has no ONNX graph (looked in {folder.path / 'onnx'} and "
                f"{export_dir(cache, resolved.model_id, identity)}) and torch is not installed "
                "to export one: pip install 'vectorstream[torch]'"
            )
        if graph is None:
            impl = TorchBackend(folder.transformer_path, threads)
        elif quantized and folder.int8_path is not None:
            impl = OnnxBackend(folder.int8_path, threads)
        elif quantized:
            directory = export_dir(cache, resolved.model_id, identity)
            int8, report = ensure_int8(resolved.model_id, folder, graph, directory, threads=threads)
            log.info("%s", report.describe())
            impl = OnnxBackend(int8, threads)
        else:
            impl = OnnxBackend(graph, threads)
    embedder = Embedder(
        model_id=resolved.model_id,
        folder=folder,
        backend=impl,
        identity=identity,
        quantized=quantized,
        normalize=normalize,
        dimensions=dimensions,
        precision=precision,
        token_budget=token_budget,
    )
    log.info("loaded %r from %s (%s)", embedder, resolved.path, resolved.origin)
    return embedder


def export_model(
    spec: str | os.PathLike[str] | None = None,
    *,
    int8: bool = False,
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    output: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export ``spec`` to ONNX in the cache (and, with ``int8``, quantise behind the gate).

    A folder that ships ``onnx/model.onnx`` is not re-exported: its graph is the fp32 source.
    ``force`` keeps an int8 graph that failed the gate (the report says so). ``output``: also
    write a self-contained folder (configs, tokenizer, ``onnx/model.onnx`` and, with ``int8``,
    ``onnx/model.int8.onnx``) that ``load_model`` runs without torch.
    """
    resolved = resolve(spec if spec is not None else load_settings().model)
    folder = read_folder(resolved.path)
    identity = weights_identity(folder)
    cache = _cache_dir(cache_dir)
    fp32 = _fp32_graph(resolved, folder, identity, cache, export=True)
    assert fp32 is not None  # export=True either returns a path or raises
    int8_path: Path | None = None
    report: GateReport | None = None
    directory = export_dir(cache, resolved.model_id, identity)
    if int8:
        int8_path, report = ensure_int8(
            resolved.model_id, folder, fp32, directory, force=force, threads=threads
        )
    written = None
    if output is not None:
        target = Path(os.path.expanduser(output))
        written = _write_onnx_folder(folder, fp32, int8_path, directory, target)
        log.info("wrote an ONNX model folder to %s", written)
    return ExportResult(resolved.model_id, fp32, int8_path, report, written)


__all__ = [
    "BACKENDS",
    "CATALOG",
    "MIN_COSINE",
    "MIN_MEAN_COSINE",
    "MODEL_KINDS",
    "PRECISIONS",
    "Catalog",
    "CatalogEntry",
    "Embedder",
    "ExportResult",
    "GateReport",
    "ModelFolder",
    "ResolvedModel",
    "available_cores",
    "cached_hub_models",
    "check_texts",
    "cosine_rows",
    "detect_kind",
    "export_model",
    "hf_hub_cache",
    "hub_offline",
    "load_model",
    "read_folder",
    "resolve_model",
    "token_budget_batches",
]
