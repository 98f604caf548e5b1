"""Learned sparse embeddings (SPLADE): one weight per vocabulary term for each text.

    masked-LM logits (batch, tokens, vocab) ─▶ attention mask ─▶ log(1 + ReLU) ─▶ max (or sum)
    over tokens ─▶ (batch, vocab) ─▶ the non-zero terms, sorted by term id

The kind's entry: :func:`detect_sparse` and :func:`load_sparse`. The parts, one job each:

- :mod:`._sparse_folder`: what a folder says (the two ``SparseEncoder`` module spellings, or a
  plain ``*ForMaskedLM`` folder when the caller names the kind);
- :mod:`._sparse_graph` / :mod:`._sparse_torch`: the SPLADE graph on ONNX Runtime (pooling
  inside), or the masked LM on torch;
- :mod:`._sparse_int8`: the int8 graph and its top-terms check;
- :mod:`._sparse_model`: :class:`SparseEmbedder`, the loaded model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, MissingDependencyError, ModelError
from ._sparse_folder import detect_sparse, read_sparse_folder
from ._sparse_graph import OnnxEngine, ensure_graph
from ._sparse_int8 import ensure_int8
from ._sparse_model import KIND, SparseEmbedder, SparseEngine
from ._sparse_torch import TorchEngine

log = logging.getLogger("vectorstream.models.sparse")


def load_sparse(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    top_k: int | None = None,
    token_budget: int | None = None,
) -> SparseEmbedder:
    """Load a SPLADE folder.

    ``backend``: "onnx" (the folder's own logits graph with the head appended, one built earlier
    into ``cache``, or one exported now when torch is installed), "torch", or None (ONNX whenever
    a graph exists or can be exported). ``quantized``: the int8 graph, built on demand and kept
    only if each check text keeps its heaviest terms. ``top_k``: keep the k largest weights per
    text (default: the folder's ``max_active_dims``, else all). ``token_budget``: padded tokens per
    forward pass (default: about 2**23 logits per pass, at least one full window).
    """
    from ._backends import torch_available
    from ._export import export_dir
    from ._folder import files_identity

    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    for name, value in (("top_k", top_k), ("token_budget", token_budget)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
    folder = read_sparse_folder(path)
    settings = (
        KIND,
        folder.pooling,
        folder.activation,
        folder.max_tokens,
        folder.query_max_tokens,
        folder.do_lower_case,
        folder.query_prompt,
        folder.document_prompt,
    )
    identity = files_identity(list(folder.identity_files), settings)
    directory = export_dir(cache, model_id, identity)
    keep = top_k if top_k is not None else folder.max_active_dims

    engine: SparseEngine
    graph: Path | None = None
    if backend != "torch":
        try:
            graph = ensure_graph(folder, directory, export=torch_available())
        except (ModelError, MissingDependencyError) as exc:
            if backend == "onnx" or quantized or not torch_available():
                raise
            # Automatic mode: a failed export must not stop the user; torch still works.
            log.warning("SPLADE ONNX export failed (%s); using the torch backend", exc)
        if graph is None and (backend == "onnx" or quantized):
            raise ModelError(
                f"{model_id} has no ONNX graph (looked in {folder.transformer_path / 'onnx'} and "
                f"{directory}) and torch is not installed to export one: "
                "pip install 'vectorstream[torch]'"
            )
    engine = OnnxEngine(graph, threads) if graph is not None else TorchEngine(folder, threads)
    model = SparseEmbedder(
        model_id=model_id,
        folder=folder,
        engine=engine,
        identity=identity,
        top_k=keep,
        token_budget=token_budget,
    )
    if quantized:
        assert graph is not None  # checked above
        int8 = ensure_int8(model, graph, directory, threads)
        model = SparseEmbedder(
            model_id=model_id,
            folder=folder,
            engine=OnnxEngine(int8, threads),
            identity=identity,
            quantized=True,
            top_k=keep,
            token_budget=token_budget,
        )
    log.info("loaded %r", model)
    return model


__all__ = ["detect_sparse", "load_sparse"]
