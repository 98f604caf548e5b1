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
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..errors import MissingDependencyError, ModelError
from ._backends import quiet_transformers
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
        import torch
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

        class _States(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(
                self,
                input_ids: torch.Tensor,
                attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor,
            ) -> torch.Tensor:
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
                if accepts_types:
                    kwargs["token_type_ids"] = token_type_ids
                return self.inner(**kwargs)[0]

        accepts_types = "token_type_ids" in model.forward.__code__.co_varnames
        dummy = torch.ones((2, 8), dtype=torch.long)
        tmp = _temp_path(target.parent, ".onnx")
        axes = {0: "batch", 1: "sequence"}
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                # The exporter warns about tracing and its own deprecation; none of it is actionable.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _States(model),
                    (dummy, dummy, torch.zeros_like(dummy)),
                    str(tmp),
                    input_names=["input_ids", "attention_mask", "token_type_ids"],
                    output_names=["last_hidden_state"],
                    dynamic_axes={
                        "input_ids": axes,
                        "attention_mask": axes,
                        "token_type_ids": axes,
                        "last_hidden_state": axes,
                    },
                    opset_version=OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            os.replace(tmp, target)
        except Exception as exc:
            raise ModelError(f"ONNX export of {folder.path} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return target


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI, AMX).

    Unknown (not Linux, not x86): ``True``, i.e. no special treatment.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return True
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    if flags_line is None:
        return True
    flags = set(flags_line.partition(":")[2].split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) or "avx2" not in flags


def quantize_int8(source: Path, target: Path, reduce_range: bool | None = None) -> Path:
    """Dynamic int8 quantisation with per-channel weight scales.

    Per-tensor scales (the default) lose too much on MiniLM (mean cosine 0.93 to fp32); per-channel
    keeps it above 0.99. ``reduce_range`` (7-bit weights; default: when the CPU lacks VNNI): on
    AVX2/AVX-512 without VNNI, ONNX Runtime's u8×s8 kernels add pairs of products in 16 bits,
    which saturates with full-range weights: MiniLM fell to mean cosine 0.9898 (min 0.966) on such
    a CPU, and came back above the gate with 7-bit weights.
    """
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
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
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
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
    "export_lock",
    "quantize_int8",
]
