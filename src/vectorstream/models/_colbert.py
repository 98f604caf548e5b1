"""Late-interaction (ColBERT) models: one L2-normalised vector per token, scored with MaxSim.

    text ─▶ marker + tokens (+ [MASK] expansion for queries) ─▶ transformer ─▶ Dense ─▶ L2 norm
         ─▶ keep real tokens (queries: + expansion; documents: − skiplist) ─▶ (n_tokens, dim)

The kind's entry: :func:`detect_multivector` and :func:`load_multivector`. The parts, one job each:

- :mod:`._colbert_folder` / :mod:`._colbert_layouts`: what a folder says, read in its layout
  (sentence-transformers ``MultiVectorEncoder``, PyLate, Stanford ColBERT);
- :mod:`._colbert_tokens`: markers, [MASK] query expansion, the skiplist, truncation;
- :mod:`._colbert_onnx` / :mod:`._colbert_torch`: the head as an ONNX graph or a torch module;
- :mod:`._colbert_int8`: the int8 graph and its accuracy gate;
- :mod:`._colbert_model`: :class:`ColbertEmbedder`, the loaded model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from ._backends import torch_available
from ._colbert_folder import ColbertFolder
from ._colbert_int8 import ensure_int8
from ._colbert_layouts import detect_multivector, read_colbert_folder
from ._colbert_model import PRECISIONS, ColbertEmbedder
from ._colbert_onnx import GRAPH_NAME, OnnxRunner, export_head, graph_identity, shipped_runner
from ._colbert_torch import TorchRunner
from ._embedder import DEFAULT_TOKEN_BUDGET
from ._export import export_dir
from ._folder import files_identity

log = logging.getLogger("vectorstream.models.multivector")


def _identity(folder: ColbertFolder) -> str:
    return files_identity(list(folder.files), ("colbert", _settings_of(folder)))


def _settings_of(folder: ColbertFolder) -> dict[str, Any]:
    """The folder's settings without its paths (part of the model's identity)."""
    data = asdict(folder)
    for key in ("path", "transformer_path", "tokenizer_path", "weights_path", "files"):
        data.pop(key)
    data["dense"] = [
        {k: v for k, v in layer.items() if k not in ("weights", "config")}
        for layer in data["dense"]
    ]
    return data


def load_multivector(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    precision: str = "float32",
    query_length: int | None = None,
    document_length: int | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> ColbertEmbedder:
    """Load a ColBERT folder (sentence-transformers, PyLate or Stanford layout).

    ``backend``: "onnx" (the folder's own head graph, or one exported once into ``cache``),
    "torch", or None (ONNX when a graph exists or torch can export one, else torch).
    ``quantized``: the int8 graph, kept only if its mean per-token cosine to fp32 is >= 0.99.
    ``precision``: float32 or float16 vectors. ``query_length`` / ``document_length`` override
    the folder's (for queries with [MASK] expansion, the expanded length).
    """
    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    folder = read_colbert_folder(Path(path))
    identity = _identity(folder)

    def build(runner: Any) -> ColbertEmbedder:
        return ColbertEmbedder(
            model_id=model_id,
            folder=folder,
            runner=runner,
            identity=identity,
            quantized=quantized,
            precision=precision,
            query_length=query_length,
            document_length=document_length,
            token_budget=token_budget,
        )

    if backend == "torch":
        return build(TorchRunner(folder, threads))
    directory = export_dir(cache, model_id, graph_identity(folder))
    shipped = shipped_runner(folder, threads)
    if shipped is not None and not quantized:
        return build(shipped)
    candidate = shipped.path if shipped is not None else directory / GRAPH_NAME
    graph: Path | None = candidate if candidate.is_file() else None
    if graph is None and torch_available():
        try:
            graph = export_head(folder, candidate)
        except ModelError as exc:
            if backend == "onnx" or quantized:
                raise
            # Automatic mode: a failed export must not stop the user; torch still works.
            log.warning("ONNX export failed (%s); using the torch backend", exc)
        except OSError as exc:
            raise ModelError(f"cannot export {model_id} into {directory}: {exc}") from exc
    if graph is None:
        if backend == "onnx" or quantized or not torch_available():
            raise ModelError(
                f"{model_id} has no ColBERT ONNX graph (looked in {folder.path / 'onnx'} and "
                f"{directory}) and torch is not installed to export one: "
                "pip install 'vectorstream[torch]'"
            )
        return build(TorchRunner(folder, threads))
    if quantized:
        int8 = ensure_int8(folder, model_id, graph, directory, threads)
        return build(
            OnnxRunner(int8, threads, folder.dim, shipped is not None and folder.normalize)
        )
    return build(OnnxRunner(graph, threads, folder.dim, False))


__all__ = ["detect_multivector", "load_multivector"]
