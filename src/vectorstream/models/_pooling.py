"""Token states -> one vector per text: pooling, normalisation, Matryoshka truncation, precision.

Shared by every backend, so ONNX and torch differ only in how token states are computed.
"""

from __future__ import annotations

import numpy as np

PRECISIONS: tuple[str, ...] = ("float32", "float16", "int8", "binary")


def pool(states: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """Pool ``states`` (batch, seq, hidden) under ``mask`` (batch, seq) as sentence-transformers does."""
    states = states.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    parts: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            parts.append(states[:, 0])
        elif mode == "max":
            # Padding must never win the max: sentence-transformers sets it to -1e9.
            parts.append(np.where(m > 0, states, np.float32(-1e9)).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len"):
            summed = (states * m).sum(axis=1)
            counts = np.clip(m.sum(axis=1), 1e-9, None)
            parts.append(summed / (counts if mode == "mean" else np.sqrt(counts)))
        elif mode == "lasttoken":
            # Index of the last attended token; right padding is what our batching produces.
            last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
            parts.append(states[np.arange(states.shape[0]), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # Same floor as torch.nn.functional.normalize, so a zero vector stays zero, not NaN.
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def to_precision(x: np.ndarray, precision: str) -> np.ndarray:
    """Convert float32 vectors to the requested output precision.

    int8 scales each vector so its largest component is ±127: deterministic per vector (no corpus
    calibration, so a streamed corpus quantises the same in any order); compare with cosine.
    binary keeps the sign bit, packed 8 dimensions per byte (numpy.packbits order).
    """
    if precision == "float32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if precision == "float16":
        return x.astype(np.float16)
    if precision == "int8":
        scale = np.abs(x).max(axis=1, keepdims=True)
        scaled = x * (127.0 / np.maximum(scale, 1e-12))
        return np.clip(np.rint(scaled), -127, 127).astype(np.int8)
    if precision == "binary":
        return np.packbits(x > 0, axis=1)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def output_dtype(precision: str) -> np.dtype:
    return np.dtype(
        {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}[
            precision
        ]
    )


__all__ = ["PRECISIONS", "l2_normalize", "output_dtype", "pool", "to_precision"]
