"""Export a model folder to ONNX (torch) and quantise it to int8, into vectorstream's cache.

Exports are keyed by the weights identity, so a changed model never reuses a stale graph. A file
lock serialises concurrent exporters (other threads, other processes) and every file is written
under a temporary name and renamed into place, so a reader never sees half a graph.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import MissingDependencyError, ModelError
from ._backends import accepts_token_types, quiet_transformers
from ._folder import ModelFolder

log = logging.getLogger("vectorstream.models.export")

OPSET = 17
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
GATE_NAME = "int8-gate.json"


def export_dir(cache: Path, model_id: str, identity: str) -> Path:
    """The cache folder for one model's graphs: readable name + weights identity."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model_id.strip("/")).strip("-")[-80:]
    return cache / "onnx" / f"{slug}-{identity[:16]}"


@contextlib.contextmanager
def export_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock")):
        yield


def _temp_path(directory: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=suffix)
    os.close(fd)
    return Path(name)


def export_fp32(folder: ModelFolder, target: Path) -> Path:
    """Export the transformer to ``target`` (token states output) unless it is already there."""
    if target.is_file():
        return target
    try:
        import torch  # noqa: F401  (here only to name the missing extra)
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc

    with export_lock(target.parent):
        if target.is_file():  # another process exported while we waited
            return target
        log.warning("exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target)
        try:
            # Eager attention exports plain MatMul/Softmax that ORT's optimiser fuses; the SDPA
            # path exports a graph it cannot fuse, which runs slower.
            with quiet_transformers():
                model = AutoModel.from_pretrained(
                    str(folder.transformer_path), attn_implementation="eager"
                ).eval()
        except Exception as exc:
            raise ModelError(f"cannot load {folder.transformer_path} for export: {exc}") from exc

        try:
            export_token_graph(model, target, lambda out: out[0], "last_hidden_state", 3)
        except ModelError as exc:
            raise ModelError(f"ONNX export of {folder.path} failed: {exc}") from exc
    return target


def export_token_graph(
    model: Any, target: Path, head: Callable[[Any], Any], output_name: str, output_rank: int
) -> Path:
    """Export a transformers ``model`` that reads (input_ids, attention_mask, token_type_ids)
    with ``head(model outputs)`` as the graph's one output, of rank ``output_rank`` (2: batch x
    features, 3: batch x tokens x features). Token types are passed only to a model that takes
    them. The caller holds :func:`export_lock` and loaded the model with eager attention."""
    import torch

    types = accepts_token_types(model)

    class _Head(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if types:
                kwargs["token_type_ids"] = token_type_ids
            return head(self.inner(**kwargs))

    dummy = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    return export_graph(
        _Head(model),
        (dummy, dummy, torch.zeros_like(dummy)),
        target,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=[output_name],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            output_name: axes if output_rank == 3 else {0: "batch"},
        },
    )


def export_graph(
    module: Any,
    args: tuple[Any, ...],
    target: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> Path:
    """Trace a torch ``module`` on ``args`` into an ONNX graph at ``target``, atomically.

    The caller holds :func:`export_lock` on ``target.parent`` and loads the module (eager
    attention for transformers, so ONNX Runtime can fuse it). Every model kind exports through
    this: the same opset, constant folding and tracing exporter.
    """
    import torch

    tmp = _temp_path(target.parent, ".onnx")
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # The exporter warns about tracing and its own deprecation; none of it is actionable.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(f"ONNX export to {target} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


# MatMuls left in float32: the feed-forward down-projections. Their inputs are the GELU outputs,
# whose rare large values (activation outliers) set a per-tensor dynamic scale that crushes every
# other value to a few levels. Names as the transformers ONNX export writes them (BERT-style
# "layer.N/output/dense", Llama/Qwen-style "mlp/down_proj", GPT/OPT-style "mlp/fc2" or "fc2").
_KEEP_FLOAT = re.compile(r"(?<!attention)/output/dense/MatMul$|/down_proj/MatMul$|/fc2/MatMul$")


def float_matmuls(graph: Path) -> list[str]:
    """Names of the MatMul nodes :func:`quantize_int8` keeps in float32."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and _KEEP_FLOAT.search(n.name)
    ]


def quantize_int8(source: Path, target: Path, *, keep_float: bool = True) -> Path:
    """Dynamic int8 quantisation: per-channel weight scales, weights of constant MatMuls only.

    Per-tensor scales (the default) lose too much on MiniLM (mean cosine 0.93 to fp32); per-channel
    keeps it near 0.99. On a CPU without VNNI (AVX2 only) that was 0.9898 on the gate's texts,
    under the gate's 0.99; keeping the feed-forward down-projections in float32 (``keep_float``,
    ``float_matmuls``) brought it to 0.9944 (min 0.983), at a cost in speed that shows most on
    CPUs with VNNI, where quantising them too passes the gate. Activation × activation products
    (attention scores) stay in float32 (``MatMulConstBOnly``).
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelError("onnxruntime's quantization tools are not installed") from exc
    tmp = _temp_path(target.parent, ".onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(source),
                str(tmp),
                per_channel=True,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=float_matmuls(source) if keep_float else [],
                extra_options={"MatMulConstBOnly": True},
            )
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(f"int8 quantisation of {source} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


__all__ = [
    "FP32_NAME",
    "GATE_NAME",
    "INT8_NAME",
    "export_dir",
    "export_fp32",
    "export_graph",
    "export_lock",
    "export_token_graph",
    "quantize_int8",
]
