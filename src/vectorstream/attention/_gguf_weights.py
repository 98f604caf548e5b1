"""A GGUF model's quantised weights served as they are, without float32 copies.

transformers de-quantises a GGUF file to float32 on load: SmolLM2-135M's 94 MB of Q4_1/Q8_0
blocks become 513 MiB of weights, more than a 32K-token context's sparse decoding needs for
everything else. ``quantize_model`` swaps a loaded Llama-family model's linear layers and token
embedding for modules that keep the file's blocks (the 4-bit codes, and one float32 scale and
minimum per block of 32) and:

- for a decode step (a few rows), multiply the blocks directly in a compiled kernel, which
  reads a quarter of the bytes the float32 matrix would take;
- for a prefill (many rows), de-quantise the layer into a temporary float32 matrix with the same
  operations as ``gguf`` (so it equals the weights transformers would have loaded, bit for bit)
  and run one matrix product.

The model computes what the float32 model computes, up to summation order in decode steps. The
kernel needs numba (the ``attention`` extra); ``AVAILABLE`` says whether it is there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ._compiled import AVAILABLE as COMPILED
from ._compiled import jit

log = logging.getLogger("vectorstream.attention.gguf_weights")

AVAILABLE = COMPILED

__all__ = ["AVAILABLE", "QuantBlocks", "QuantEmbedding", "QuantLinear", "quantize_model"]

_BLOCK = 32
# Rows up to this many go through the kernel; more are a prefill and use one matrix product.
_KERNEL_ROWS = 8


@dataclass(frozen=True)
class QuantBlocks:
    """One weight matrix in blocks of 32 along its input: codes, scales and (Q4_1) minimums.

    ``codes`` are (out, in/2) packed nibbles for Q4_1 (the low nibbles hold a block's first 16
    values, as in GGUF) or (out, in) int8 for Q8_0; ``scales`` and ``mins`` are (out, in/32).
    """

    kind: str
    codes: np.ndarray
    scales: np.ndarray
    mins: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.scales.shape[0]), int(self.scales.shape[1]) * _BLOCK

    @property
    def nbytes(self) -> int:
        extra = 0 if self.mins is None else self.mins.nbytes
        return int(self.codes.nbytes + self.scales.nbytes + extra)

    def rows(self, index: np.ndarray) -> QuantBlocks:
        """The blocks of the given output rows (a copy)."""
        mins = None if self.mins is None else np.ascontiguousarray(self.mins[index])
        return QuantBlocks(
            self.kind,
            np.ascontiguousarray(self.codes[index]),
            np.ascontiguousarray(self.scales[index]),
            mins,
        )

    def dequantize(self, index: np.ndarray | None = None) -> np.ndarray:
        """Float32 weights (out, in), or only the rows ``index``: ``gguf``'s operations exactly."""
        codes = self.codes if index is None else self.codes[index]
        scales = (self.scales if index is None else self.scales[index])[..., None]
        n_rows = codes.shape[0]
        if self.kind == "q8_0":
            values = codes.reshape(n_rows, -1, _BLOCK).astype(np.float32)
            return (values * scales).reshape(n_rows, -1)
        assert self.mins is not None
        mins = (self.mins if index is None else self.mins[index])[..., None]
        packed = codes.reshape(n_rows, -1, 1, _BLOCK // 2)
        nibbles = (packed >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & np.uint8(15)
        values = nibbles.reshape(n_rows, -1, _BLOCK).astype(np.float32)
        return ((scales * values) + mins).reshape(n_rows, -1)


def _from_gguf(kind: str, raw: np.ndarray) -> QuantBlocks:
    """Split GGUF block bytes (out, n_blocks · block bytes) into codes, scales and minimums."""
    n_rows = raw.shape[0]
    if kind == "q8_0":
        blocks = raw.reshape(n_rows, -1, 2 + _BLOCK)
        scales = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(n_rows, -1)
        return QuantBlocks(kind, codes, scales, None)
    blocks = raw.reshape(n_rows, -1, 4 + _BLOCK // 2)
    scales = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
    mins = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    codes = np.ascontiguousarray(blocks[:, :, 4:]).reshape(n_rows, -1)
    return QuantBlocks(kind, codes, scales, mins)


# -- the kernels (compiled by numba when it is there) ----------------------------------------------
def _gemv_q4_1_py(
    codes: np.ndarray, scales: np.ndarray, mins: np.ndarray, x: np.ndarray, out: np.ndarray
) -> None:
    n_out, n_blocks = scales.shape
    # One 32-wide accumulator per row, summed once at its end: reducing each block on its own
    # would cost a horizontal sum per 32 weights, more than the products themselves.
    acc = np.empty(32, dtype=np.float32)
    for i in range(x.shape[0]):
        for r in range(n_out):
            acc[:] = 0
            for b in range(n_blocks):
                d = scales[r, b]
                m = mins[r, b]
                for j in range(16):
                    c = codes[r, b * 16 + j]
                    acc[j] += (d * np.float32(c & 15) + m) * x[i, b * 32 + j]
                    acc[16 + j] += (d * np.float32(c >> 4) + m) * x[i, b * 32 + 16 + j]
            total = np.float32(0.0)
            for j in range(32):
                total += acc[j]
            out[i, r] = total


def _gemv_q8_0_py(codes: np.ndarray, scales: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    n_out, n_blocks = scales.shape
    acc = np.empty(32, dtype=np.float32)
    for i in range(x.shape[0]):
        for r in range(n_out):
            acc[:] = 0
            for b in range(n_blocks):
                d = scales[r, b]
                for j in range(32):
                    acc[j] += d * np.float32(codes[r, b * 32 + j]) * x[i, b * 32 + j]
            total = np.float32(0.0)
            for j in range(32):
                total += acc[j]
            out[i, r] = total


# Without numba the kernels would run as Python loops: prefill's path (one matrix product) then
# serves every call. Reassociation lets LLVM vectorise the block dot products.
_FAST = {"reassoc", "contract", "nsz"}
_KERNELS: dict[str, Callable[..., None]] = (
    {"q4_1": jit(_gemv_q4_1_py, fastmath=_FAST), "q8_0": jit(_gemv_q8_0_py, fastmath=_FAST)}
    if COMPILED
    else {}
)


def matmul(blocks: QuantBlocks, x: torch.Tensor) -> torch.Tensor:
    """``x @ W.T`` for ``x`` (..., in), with ``W`` the de-quantised blocks."""
    n_out, n_in = blocks.shape
    flat = x.reshape(-1, n_in)
    if flat.shape[0] > _KERNEL_ROWS or flat.dtype != torch.float32 or not _KERNELS:
        weight = torch.from_numpy(blocks.dequantize()).to(x.dtype)
        return torch.nn.functional.linear(x, weight)
    xs = flat.detach().contiguous().numpy()
    out = np.empty((xs.shape[0], n_out), dtype=np.float32)
    if blocks.kind == "q4_1":
        _KERNELS["q4_1"](blocks.codes, blocks.scales, blocks.mins, xs, out)
    else:
        _KERNELS["q8_0"](blocks.codes, blocks.scales, xs, out)
    return torch.from_numpy(out).reshape(*x.shape[:-1], n_out)


class QuantLinear(torch.nn.Module):
    """A bias-free linear layer over GGUF blocks (see the module docstring)."""

    def __init__(self, blocks: QuantBlocks) -> None:
        super().__init__()
        self.blocks = blocks
        self.out_features, self.in_features = blocks.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return matmul(self.blocks, x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.blocks.kind}"


class QuantEmbedding(torch.nn.Module):
    """A token embedding over GGUF blocks: only the looked-up rows are de-quantised."""

    def __init__(self, blocks: QuantBlocks) -> None:
        super().__init__()
        self.blocks = blocks
        self.num_embeddings, self.embedding_dim = blocks.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).cpu().numpy()
        rows = torch.from_numpy(self.blocks.dequantize(flat))
        return rows.reshape(*ids.shape, self.embedding_dim)


# -- swapping a loaded model's weights --------------------------------------------------------------
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _unpermute(n_rows: int, n_heads: int) -> np.ndarray:
    """Row order undoing llama.cpp's rotary permutation of Q and K (as transformers undoes it)."""
    half = n_rows // n_heads // 2
    return np.arange(n_rows).reshape(n_heads, half, 2).swapaxes(2, 1).reshape(-1)


def read_blocks(path: Path) -> dict[str, QuantBlocks]:
    """Every quantised matrix of a GGUF file, by GGUF name, copied out of the file's map."""
    from gguf import GGMLQuantizationType, GGUFReader

    kinds = {GGMLQuantizationType.Q4_1: "q4_1", GGMLQuantizationType.Q8_0: "q8_0"}
    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path.name}: {exc}") from exc
    found: dict[str, QuantBlocks] = {}
    for tensor in reader.tensors:
        kind = kinds.get(tensor.tensor_type)
        if kind is not None:
            found[tensor.name] = _from_gguf(kind, np.asarray(tensor.data))
    del reader
    return found


def quantize_model(model: Any, gguf_file: Path) -> int:
    """Swap ``model``'s linear layers and token embedding for the file's blocks, in place.

    Returns the number of bytes the blocks take. Raises ``ModelError`` when the file holds a
    quantisation this module does not multiply, or its shapes do not match the model's.
    """
    if model.config.model_type not in ("llama", "mistral", "qwen2"):
        raise ModelError(
            f"GGUF blocks are served for Llama-family models, not {model.config.model_type}"
        )
    blocks = read_blocks(gguf_file)
    config = model.config
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    layers = model.model.layers
    untied = "output.weight" in blocks
    expected = 1 + untied + len(_LAYER_NAMES) * len(layers)
    if len(blocks) != expected:
        raise ModelError(
            f"{gguf_file.name}: {len(blocks)} Q4_1/Q8_0 matrices, expected {expected} "
            "(other quantisations are loaded as float32)"
        )
    # Every matrix is checked before any is swapped: a mismatch leaves the model as it was.
    swaps: list[tuple[Any, str, torch.nn.Module]] = []
    for i, layer in enumerate(layers):
        for short, attr in _LAYER_NAMES.items():
            quant = blocks.get(f"blk.{i}.{short}.weight")
            if quant is None:
                raise ModelError(f"{gguf_file.name}: no blk.{i}.{short} matrix")
            if short in ("attn_q", "attn_k"):
                heads = n_heads if short == "attn_q" else n_kv
                quant = quant.rows(_unpermute(quant.shape[0], heads))
            parent_name, _, leaf = attr.rpartition(".")
            parent = layer.get_submodule(parent_name)
            current = getattr(parent, leaf)
            if tuple(current.weight.shape) != quant.shape or current.bias is not None:
                raise ModelError(f"{gguf_file.name}: blk.{i}.{short} does not match the model")
            swaps.append((parent, leaf, QuantLinear(quant)))
    embed = blocks.get("token_embd.weight")
    if embed is None:
        raise ModelError(f"{gguf_file.name}: no token_embd matrix")
    head = blocks["output.weight"] if untied else embed
    if tuple(model.model.embed_tokens.weight.shape) != embed.shape:
        raise ModelError(f"{gguf_file.name}: token_embd does not match the model")
    if tuple(model.lm_head.weight.shape) != head.shape:
        raise ModelError(f"{gguf_file.name}: the output matrix does not match the model")
    swaps.append((model.model, "embed_tokens", QuantEmbedding(embed)))
    swaps.append((model, "lm_head", QuantLinear(head)))
    for parent, leaf, module in swaps:
        setattr(parent, leaf, module)
    total = sum(q.nbytes for name, q in blocks.items() if name != "output.weight" or untied)
    log.info("serving %s's quantised blocks as they are (%.0f MiB)", gguf_file.name, total / 2**20)
    return total
