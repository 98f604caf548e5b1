"""The ColBERT graph: the folder's own head graph or one exported once, run on ONNX Runtime.

The projection and the normalisation run inside the graph (output: batch × tokens × dim).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import onnx_session
from ._colbert_folder import ColbertFolder
from ._colbert_torch import torch_head
from ._export import export_graph, export_lock
from ._folder import files_identity
from ._threads import available_cores

log = logging.getLogger("vectorstream.models.multivector")

GRAPH_NAME = "colbert.onnx"
OUTPUT_NAME = "token_vectors"


class OnnxRunner:
    """The exported graph (transformer + projection + normalisation) on ONNX Runtime."""

    name = "onnx"
    device = "cpu"

    def __init__(
        self,
        path: Path,
        threads: int | None,
        dim: int,
        renormalize: bool,
        *,
        session: Any = None,
    ) -> None:
        self.path = path
        self._session = session if session is not None else onnx_session(path, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ModelError(f"ONNX graph {path} lacks inputs {sorted(missing)}")
        output = self._session.get_outputs()[0]
        width = output.shape[-1] if len(output.shape) == 3 else None
        if width is None or (isinstance(width, int) and width != dim):
            raise ModelError(
                f"ONNX graph {path}: first output {output.name!r} must be token vectors "
                f"(batch, tokens, {dim}), got shape {output.shape}"
            )
        self._output = output.name
        self._renormalize = renormalize
        self.threads = threads if threads and threads > 0 else available_cores()

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (vectors,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._renormalize:
            # A graph shipped with the folder may end at the projection.
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def export_head(folder: ColbertFolder, target: Path) -> Path:
    """Export the whole head to ``target`` once (other processes wait on the lock)."""
    if target.is_file():
        return target
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    with export_lock(target.parent):
        if target.is_file():
            return target
        log.warning("exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target)
        head = torch_head(folder, eager=True)
        ids = torch.ones((2, 8), dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0  # traced with padding, so no all-ones shortcut is baked in
        axes = {0: "batch", 1: "sequence"}
        export_graph(
            head,
            (ids, mask, torch.zeros_like(ids)),
            target,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                OUTPUT_NAME: axes,
            },
        )
    return target


def graph_identity(folder: ColbertFolder) -> str:
    """What decides the exported graph (the tokenisation settings do not): its cache key."""
    settings = (
        "colbert-graph-v1",
        folder.layout,
        folder.normalize,
        [(d.in_features, d.out_features, d.bias, d.activation, d.residual) for d in folder.dense],
    )
    return files_identity(folder.graph_files, settings)


def shipped_runner(folder: ColbertFolder, threads: int | None) -> OnnxRunner | None:
    """The folder's own ``onnx/model.onnx`` when it ends at the token vectors; None when there is
    none or it ends at the hidden states (a transformer-only export, as optimum writes)."""
    path = folder.transformer_path / "onnx" / "model.onnx"
    if not path.is_file():
        return None
    session = onnx_session(path, threads)
    output = session.get_outputs()[0]
    width = output.shape[-1] if len(output.shape) == 3 else None
    if output.name == OUTPUT_NAME or (width == folder.dim and width != folder.hidden_size):
        # It may end at the projection: normalising again is harmless where it does not.
        return OnnxRunner(path, threads, folder.dim, folder.normalize, session=session)
    log.info("%s does not end at the ColBERT head (output %s); using an export", path, output.shape)
    return None


__all__ = [
    "GRAPH_NAME",
    "OUTPUT_NAME",
    "OnnxRunner",
    "export_head",
    "graph_identity",
    "shipped_runner",
]
