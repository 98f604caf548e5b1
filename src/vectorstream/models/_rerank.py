"""Rerankers (cross-encoders): score (query, text) pairs the way sentence-transformers does.

    load_rerank(path) ─▶ read the folder (architecture, labels, max length, activation)
                      ─▶ a logits graph (folder's onnx/, cache, or exported now) or torch
                      ─▶ Reranker.rerank(query, texts) / Reranker.score(pairs)

Fidelity target: ``sentence_transformers.CrossEncoder.predict`` (and ``rank``) on the same folder.
What it does, and so what these modules do:

- pairs are tokenised together (``[CLS] query [SEP] text [SEP]`` for BERT), cut to the model's
  max length with the "longest_first" strategy (tokens come off the longer side first), never
  stripped;
- the max length is ``sentence_bert_config.json``'s ``max_seq_length`` when given, otherwise the
  tokenizer's ``model_max_length`` capped by the config's ``max_position_embeddings``;
- the activation applied to the logits is, in this order: the caller's; the one recorded in
  ``config_sentence_transformers.json`` (``activation_fn``); in ``config.json`` (``sentence_transformers
  .activation_fn``, or the pre-v4 ``sbert_ce_default_activation_function``); otherwise **sigmoid for
  a single-label model and identity for a multi-label one**. So a plain HF folder with one label
  scores in (0, 1) unless told otherwise, and a folder that recorded ``Identity`` (the ms-marco
  cross-encoders) returns raw logits. Paths outside ``torch.`` are not imported (sentence-transformers
  ignores them too without ``trust_remote_code``) and the default applies;
- a multi-label model's ``score`` returns every activated column, shape ``(n, num_labels)``, as
  ``predict`` does; ``rerank`` needs one score per pair and refuses such a model, as ``rank`` does.

The kind's entry: :func:`detect_rerank` and :func:`load_rerank`. The parts, one job each:

- :mod:`._rerank_folder`: what a folder says (sentence-transformers CrossEncoder or plain HF
  sequence-classification folders; max length, prompt, the activation the configs name);
- :mod:`._rerank_onnx` / :mod:`._rerank_torch`: the logits graph on ONNX Runtime (the folder's own
  or exported once), or the model on torch;
- :mod:`._rerank_int8`: the int8 graph and its ranking gate;
- :mod:`._rerank_model`: :class:`~._rerank_model.Reranker`, the loaded model.

Heavy imports (onnxruntime, torch, transformers) happen inside functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, ModelError
from ._rerank_folder import detect_rerank, read_rerank_folder
from ._rerank_int8 import ensure_int8
from ._rerank_model import ACTIVATIONS, DEFAULT_TOKEN_BUDGET, KIND, Reranker
from ._rerank_onnx import GRAPH_NAME, OnnxLogits, export_rerank_graph, graph_has_logits
from ._rerank_torch import TorchLogits

log = logging.getLogger("vectorstream.models.rerank")


def load_rerank(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    activation: str | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> Reranker:
    """A :class:`Reranker` for the cross-encoder folder at ``path``.

    ``backend``: "onnx" (a logits graph from the folder's ``onnx/model.onnx`` or exported once
    into the cache), "torch", or None (ONNX whenever a graph exists or can be exported).
    ``quantized``: the int8 graph, kept only when it ranks the check pairs as fp32 does.
    ``activation``: "sigmoid", "identity", or None for the folder's own (see the module doc).
    """
    from ._backends import torch_available
    from ._export import export_dir
    from ._folder import files_identity

    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    if activation is not None and activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    folder = read_rerank_folder(Path(path))
    identity = files_identity(
        list(folder.identity_files), (KIND, folder.max_tokens, folder.do_lower_case, folder.prompt)
    )
    weights = folder.weights_path or folder.onnx_path
    graph_identity = files_identity(
        [p for p in (weights, folder.transformer_path / "config.json") if p is not None],
        (KIND, "logits"),
    )
    directory = export_dir(cache, model_id, graph_identity)

    engine: OnnxLogits | TorchLogits
    if backend == "torch":
        engine = TorchLogits(folder.transformer_path, threads)
    else:
        graph: Path | None = None
        if folder.onnx_path is not None and graph_has_logits(folder.onnx_path):
            graph = folder.onnx_path
        elif (directory / GRAPH_NAME).is_file():
            graph = directory / GRAPH_NAME
        elif torch_available() and folder.weights_path is not None:
            try:
                graph = export_rerank_graph(folder, directory / GRAPH_NAME)
            except (ModelError, OSError) as exc:
                if backend == "onnx" or quantized:
                    raise ModelError(f"cannot export {model_id} to ONNX: {exc}") from exc
                # Automatic mode: a failed export must not stop the user; torch still works.
                log.warning("ONNX export failed (%s); using the torch backend", exc)
        if graph is None and (backend == "onnx" or quantized or not torch_available()):
            raise ModelError(
                f"{model_id} has no logits graph (looked in {folder.transformer_path / 'onnx'} "
                f"and {directory}) and torch is not installed to export one or run the model: "
                "pip install 'vectorstream[torch]'"
            )
        if graph is None:
            engine = TorchLogits(folder.transformer_path, threads)
        elif quantized:
            engine = OnnxLogits(ensure_int8(model_id, folder, graph, directory, threads), threads)
        else:
            engine = OnnxLogits(graph, threads)
    return Reranker(
        model_id=model_id,
        folder=folder,
        engine=engine,
        backend=engine.name,
        identity=identity,
        quantized=quantized,
        threads=engine.threads,
        activation=activation,
        token_budget=token_budget,
    )


__all__ = ["detect_rerank", "load_rerank"]
