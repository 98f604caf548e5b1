"""The SPLADE graph: the model's logits graph with the SPLADE head appended, on ONNX Runtime.

    masked-LM logits (batch, tokens, vocab) ─▶ attention mask ─▶ log(1 + ReLU) ─▶ max (or sum)
    over tokens ─▶ (batch, vocab) term weights

The pooling runs inside the graph, so the (batch, tokens, vocab) logits never reach Python. The
logits graph is the folder's own (``onnx/model.onnx``) or one exported from the torch weights.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ._sparse_folder import SparseFolder
from ._sparse_torch import export_logits

log = logging.getLogger("vectorstream.models.sparse")

GRAPH_NAME = "splade.onnx"  # input ids in, (batch, vocab) term weights out
_PROTO_LIMIT = 1_800_000_000  # weight bytes past which a graph no longer fits one protobuf


class OnnxEngine:
    """A SPLADE graph (pooling inside) on ONNX Runtime."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        from ._threads import available_cores

        self.path = path
        self.threads: int | None = threads if threads and threads > 0 else available_cores()
        self._session = _session(path, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        outputs = self._session.get_outputs()
        if missing or len(outputs[0].shape) != 2:
            raise ModelError(
                f"{path} is not a SPLADE graph (inputs {sorted(self._inputs)}, first output shape "
                f"{outputs[0].shape}; expected input_ids and attention_mask in, (batch, vocab) out)"
            )
        self._output = outputs[0].name

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (weights,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return np.asarray(weights, dtype=np.float32)


def _session(path: Path, threads: int | None) -> Any:
    """The shared session set-up; it runs without ONNX Runtime's memory patterns (``onnx_session``),
    which for this graph held more (tokens x vocab) logits-sized buffers at once than the arena
    does: at 32 texts x 512 tokens of a 30k vocabulary the peak was 130 MiB higher."""
    from ._backends import onnx_session

    return onnx_session(path, threads)


def _logits_output(model: Any, vocab: int, source: Path) -> Any:
    """The graph output holding (batch, tokens, vocab) logits."""
    candidates = []
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 3 and (not dims[2].HasField("dim_value") or dims[2].dim_value == vocab):
            candidates.append(output)
    named = [o for o in candidates if o.name == "logits"]
    if not (named or candidates):
        raise ModelError(
            f"{source} has no (batch, tokens, {vocab}) logits output (outputs: "
            f"{[o.name for o in model.graph.output]}); SPLADE needs the masked-LM logits"
        )
    return (named or candidates)[0]


def _append_head(model: Any, vocab: int, pooling: str, activation: str, source: Path) -> Any:
    """Append mask, log(1 + ReLU) and pooling to a logits graph; its only output: ``weights``."""
    import onnx
    from onnx import TensorProto, helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ModelError(f"{source} uses ONNX opset {opset}; SPLADE graphs need opset 11 or later")
    logits = _logits_output(model, vocab, source)
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any) -> str:
        inits.append(
            helper.make_tensor(
                f"splade/{name}",
                dtype,
                [len(value)] if isinstance(value, list) else [],
                value if isinstance(value, list) else [value],
            )
        )
        return f"splade/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"splade/{name}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(op: str, value: str, name: str) -> str:
        # Reduce ops moved their axes from an attribute to an input (ReduceSum at 13, the rest at 18).
        if opset >= (13 if op == "ReduceSum" else 18):
            return node(
                op, [value, const(f"{name}_axes", [1], TensorProto.INT64)], name, keepdims=0
            )
        return node(op, [value], name, axes=[1], keepdims=0)

    one = const("one", 1.0, TensorProto.FLOAT)
    zero = const("zero", 0.0, TensorProto.FLOAT)

    def log1p(value: str, name: str, *, exact: bool) -> str:
        u = node("Add", [value, one], f"{name}_u")
        if not exact:
            return node("Log", [u], name)
        # log(1 + x) keeps only the digits of x that survive in 1 + x (an absolute error up to
        # 6e-8); this form (log(u) * x / (u - 1)) keeps them all, as a library log1p does.
        d = node("Sub", [u, one], f"{name}_d")
        scaled = node(
            "Mul",
            [node("Log", [u], f"{name}_log"), node("Div", [value, d], f"{name}_ratio")],
            f"{name}_scaled",
        )
        return node("Where", [node("Equal", [d, zero], f"{name}_exact"), value, scaled], name)

    def activate(value: str, *, exact: bool) -> str:
        out = log1p(node("Relu", [value], "relu"), "log1p", exact=exact)
        return log1p(out, "log1p2", exact=exact) if activation == "log1p_relu" else out

    scores = logits.name
    if logits.type.tensor_type.elem_type != TensorProto.FLOAT:
        scores = node("Cast", [scores], "logits_float", to=TensorProto.FLOAT)
    mask = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    if opset >= 13:
        mask = node("Unsqueeze", [mask, const("mask_axes", [2], TensorProto.INT64)], "mask")
    else:
        mask = node("Unsqueeze", [mask], "mask", axes=[2])
    if pooling == "max":
        # The transform never decreases, so it commutes with max: it runs on (batch, vocab) only,
        # where the exact log1p costs nothing.
        pooled = reduce("ReduceMax", node("Mul", [scores, mask], "masked"), "max")
        weights = activate(pooled, exact=True)
    else:
        # Per token, over (tokens x vocab): the plain form, five passes fewer. Its error (6e-8
        # per token) is far under the float32 noise of the logits themselves.
        weights = reduce(
            "ReduceSum", node("Mul", [activate(scores, exact=False), mask], "masked"), "sum"
        )
    nodes.append(helper.make_node("Identity", [weights], ["weights"], name="splade/weights"))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", vocab])
    )
    if _weight_bytes(model) < _PROTO_LIMIT:  # the checker cannot take a bigger message
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:  # onnx raises ValidationError and friends
            raise ModelError(f"cannot append the SPLADE head to {source}: {exc}") from exc
    return model


def _weight_bytes(model: Any) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _write_headed(source: Path, target: Path, folder: SparseFolder) -> Path:
    """Read the logits graph at ``source``, append the head, write it to ``target`` atomically."""
    import onnx

    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX graph {source}: {exc}") from exc
    model = _append_head(model, folder.vocab_size, folder.pooling, folder.activation, source)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        # Protobuf caps one message at 2 GiB: bigger graphs keep their weights beside them.
        big = _weight_bytes(model) >= _PROTO_LIMIT
        onnx.save_model(
            model,
            str(tmp),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=f"{target.name}.data",
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def ensure_graph(folder: SparseFolder, directory: Path, *, export: bool) -> Path | None:
    """The SPLADE graph in ``directory``: built from the folder's own logits graph, or exported
    from the torch weights (``export``); None when neither is possible."""
    from ._export import export_lock

    target = directory / GRAPH_NAME
    if target.is_file():
        return target
    if folder.onnx_path is None and not export:
        return None
    try:
        with export_lock(directory):
            if target.is_file():  # another process built it while we waited
                return target
            if folder.onnx_path is not None:
                log.info("appending the SPLADE head to %s into %s", folder.onnx_path, target)
                return _write_headed(folder.onnx_path, target, folder)
            log.warning(
                "exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target
            )
            logits = directory / ".logits.onnx"
            try:
                export_logits(folder, logits)
                return _write_headed(logits, target, folder)
            finally:
                logits.unlink(missing_ok=True)
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelError(f"cannot write the SPLADE graph into {directory}: {exc}") from exc


__all__ = ["GRAPH_NAME", "OnnxEngine", "ensure_graph"]
