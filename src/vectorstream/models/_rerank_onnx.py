"""The cross-encoder's logits graph on ONNX Runtime: the folder's own, or one exported once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._rerank_folder import RerankFolder
from ._rerank_torch import load_classifier

log = logging.getLogger("vectorstream.models.rerank")

GRAPH_NAME = "rerank.onnx"


class OnnxLogits:
    """A logits graph on ONNX Runtime: token ids in, logits ``(batch, num_labels)`` out."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        from ._backends import onnx_session

        self.path = path
        self._session = onnx_session(path, threads)
        self.threads: int | None = int(self._session.get_session_options().intra_op_num_threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise ModelError(f"ONNX graph {path} lacks input_ids/attention_mask inputs")
        output = self._session.get_outputs()[0]
        if len(output.shape) != 2:
            raise ModelError(
                f"ONNX graph {path}: first output {output.name!r} must be logits "
                f"(batch, labels), got shape {output.shape}"
            )
        self._output = output.name

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (logits,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return np.asarray(logits, dtype=np.float32)


def graph_has_logits(path: Path) -> bool:
    """Whether a shipped ``onnx/model.onnx`` outputs logits (not token states), read cheaply."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        return len(dims) == 2
    except Exception:  # an unreadable graph is not one we can use
        return False


def export_rerank_graph(folder: RerankFolder, target: Path) -> Path:
    """Export the sequence-classification model to ``target`` (output: logits) unless it exists."""
    if target.is_file():
        return target
    try:
        import torch  # noqa: F401  (here only to name the missing extra)
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._export import export_lock, export_token_graph

    with export_lock(target.parent):
        if target.is_file():  # another process exported while we waited
            return target
        log.warning("exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target)
        # Eager attention exports plain MatMul/Softmax, which ONNX Runtime fuses.
        model = load_classifier(folder.transformer_path, eager=True)
        export_token_graph(model, target, lambda out: out.logits, "logits", 2)
    return target


__all__ = ["GRAPH_NAME", "OnnxLogits", "export_rerank_graph", "graph_has_logits"]
