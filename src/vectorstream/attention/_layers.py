"""The cache layer of a ``Session``: a stored prefix (memory-mapped) plus a growing suffix.

A layer holds its keys and values in two parts. The *base* is a context loaded from a
``ContextDB``: tensors that view the file through a memory map, so only the pages a decode step
reads become resident. The *suffix* holds the tokens computed in this session, in buffers that grow
geometrically (a step never copies the whole cache). A layer without a base keeps everything in the
suffix, as an ordinary cache does.

Scoring every key of a long context is the main cost of a flat DIPR scan, and it would make every
key page resident. ``Sketch`` keeps a bfloat16 copy of the keys (half the bytes of the keys, a
quarter of the layer) that a decode step scans instead; only the candidates it finds are read
exactly from the base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

from ._stream_scan import KeySketch

__all__ = ["BufferedLayer", "KVRows", "Sketch", "StoredLayer"]

# Relative error bound of a bfloat16 score: both operands rounded (2^-8 each, relative to |q||k|),
# the product rounded to bfloat16 (2^-9), with room to spare for the float32 accumulation.
SKETCH_ERROR = 2.0**-6
BUCKET = 1024


@dataclass(frozen=True)
class StoredLayer:
    """A stored layer as the compiled scan reads it: its int8 key sketch (a view of its map), its
    float32 or float16 keys and values (H, n, d) as arrays viewing the memory map, a release of the layer's
    key and value pages, and ``read_sketch``, which copies the sketch into a buffer shared by the
    layers (used when pages are given back, so the sketch's pages are never mapped), unless
    ``resident``: the sketch is within ``SparseConfig.sketch_resident_bytes`` and stays mapped."""

    sketch: KeySketch
    keys: np.ndarray
    values: np.ndarray
    release: Callable[[], None]
    read_sketch: Callable[[], KeySketch]
    resident: bool = False


def _grow(buf: torch.Tensor | None, used: int, need: int, like: torch.Tensor) -> torch.Tensor:
    """``buf`` with room for ``need`` rows (dim -2), its first ``used`` rows kept."""
    if buf is not None and need <= buf.shape[-2] and buf.shape[:-2] == like.shape[:-2]:
        return buf
    # Grow by a quarter: amortised O(1) per token without doubling a long cache's footprint.
    cap = max(256, need + need // 4)
    new = like.new_empty((*like.shape[:-2], cap, like.shape[-1]))
    if buf is not None and used:
        new[..., :used, :] = buf[..., :used, :]
    return new


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` over a base (memory-mapped stored context) and a growing suffix.

    Without a base, ``keys``/``values`` are the whole cache (prefix views of the buffers). With one,
    they are the suffix only, and ``full()`` concatenates base and suffix when exact attention needs
    every key; a sparse step reads the parts through ``rows()``.
    """

    _kbuf: torch.Tensor | None = None
    _vbuf: torch.Tensor | None = None
    _used = 0
    base_keys: torch.Tensor | None = None
    base_values: torch.Tensor | None = None
    release: Callable[[], None] | None = None
    sketch: Sketch | None = None
    stored: StoredLayer | None = None
    # Set by the session before ``update``: the coming step is sparse, so the layer need not
    # concatenate base and suffix for exact attention.
    sparse_next = False

    @property
    def base_len(self) -> int:
        return 0 if self.base_keys is None else int(self.base_keys.shape[-2])

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            return 0
        return self.base_len + self._used

    def set_base(
        self, keys: torch.Tensor, values: torch.Tensor, release: Callable[[], None] | None
    ) -> None:
        """Use ``keys``/``values`` (1, H, L, d), typically memory-mapped, as the first L tokens."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self.base_keys, self.base_values, self.release = keys, values, release
        empty = (*keys.shape[:2], 0, keys.shape[-1])
        self._kbuf, self._vbuf, self._used = None, None, 0
        self.keys = keys.new_empty(empty)
        self.values = values.new_empty((*values.shape[:2], 0, values.shape[-1]))

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used, t = self._used, key_states.shape[-2]
        if self.base_keys is None and used and _ptr(self.keys) != _ptr(self._kbuf):
            # crop() and batch selection replace keys with new tensors: adopt them.
            self._kbuf, self._vbuf = self.keys, self.values
            used = self._used = self._kbuf.shape[-2] if self._kbuf is not None else 0
        self._kbuf = _grow(self._kbuf, used, used + t, key_states)
        self._vbuf = _grow(self._vbuf, used, used + t, value_states)
        self._kbuf[..., used : used + t, :] = key_states
        self._vbuf[..., used : used + t, :] = value_states
        self._used = used + t
        keys = self._kbuf[..., : self._used, :]
        values = self._vbuf[..., : self._used, :]
        self.keys, self.values = keys, values
        if self.sketch is not None:
            self.sketch.extend(self)
        if self.base_keys is None or self.sparse_next:
            # The sparse step reads base and suffix itself; exact attention needs one tensor.
            return keys, values
        return self.full()

    def suffix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values held in memory (everything when there is no base)."""
        if self.keys is None or self.values is None:
            raise ValueError("the cache layer holds no keys yet")
        return self.keys, self.values

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every key and value as one tensor each (a copy when there is a base)."""
        keys, values = self.suffix()
        if self.base_keys is None or self.base_values is None:
            return keys, values
        return (
            torch.cat([self.base_keys, keys], dim=-2),
            torch.cat([self.base_values, values], dim=-2),
        )

    def rows(self) -> KVRows:
        return KVRows(self)

    def crop(self, tokens_to_remove: int) -> None:
        if self.base_keys is not None and tokens_to_remove < 0 and -tokens_to_remove > self._used:
            # Cropping into the stored part: keep the rest in memory, without a base.
            keys, values = self.full()
            self.base_keys = self.base_values = None
            self.keys, self.values = keys, values
            self._kbuf, self._vbuf, self._used = keys, values, keys.shape[-2]
            self.sketch = None
            self.stored = None
        super().crop(tokens_to_remove)
        if self.is_initialized and self.keys is not None:
            self._used = self.keys.shape[-2]
            if self.sketch is not None:
                self.sketch.truncate(self.get_seq_length())


def _ptr(tensor: torch.Tensor | None) -> int:
    return -1 if tensor is None else tensor.data_ptr()


class KVRows:
    """Read access to one layer's keys and values of batch item 0, across base and suffix."""

    def __init__(self, layer: BufferedLayer) -> None:
        self.base_k = None if layer.base_keys is None else layer.base_keys[0]
        self.base_v = None if layer.base_values is None else layer.base_values[0]
        keys, values = layer.suffix()
        self.suf_k, self.suf_v = keys[0], values[0]
        self.split = layer.base_len
        self.n = self.split + self.suf_k.shape[-2]

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor) -> KVRows:
        """Rows of whole (1, H, n, d) tensors held in memory."""
        rows = cls.__new__(cls)
        rows.base_k = rows.base_v = None
        rows.suf_k, rows.suf_v = keys[0], values[0]
        rows.split, rows.n = 0, keys.shape[-2]
        return rows

    def _cast(self, part: torch.Tensor) -> torch.Tensor:
        """Rows of the base in the dtype the layer computes in (a float16 stored context under a
        float32 model; ``torch.cat``/``torch.where`` promote the mixed cases themselves)."""
        return part if part.dtype == self.suf_k.dtype else part.to(self.suf_k.dtype)

    def span(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions [a, b), (H, b − a, d)."""
        s = self.split
        if a >= s or self.base_k is None or self.base_v is None:
            return self.suf_k[:, a - s : b - s], self.suf_v[:, a - s : b - s]
        if b <= s:
            return self._cast(self.base_k[:, a:b]), self._cast(self.base_v[:, a:b])
        return (
            torch.cat([self.base_k[:, a:s], self.suf_k[:, : b - s]], dim=1),
            torch.cat([self.base_v[:, a:s], self.suf_v[:, : b - s]], dim=1),
        )

    def take(self, head: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``idx`` of one KV head: only those rows are read."""
        s = self.split
        if self.base_k is None or self.base_v is None:
            return self.suf_k[head, idx], self.suf_v[head, idx]
        below = idx < s
        if bool(below.all()):
            return self._cast(self.base_k[head, idx]), self._cast(self.base_v[head, idx])
        if not bool(below.any()):
            return self.suf_k[head, idx - s], self.suf_v[head, idx - s]
        lo, hi = idx.clamp(max=s - 1), (idx - s).clamp(min=0)
        pick = below.unsqueeze(-1)
        return (
            torch.where(pick, self.base_k[head, lo], self.suf_k[head, hi]),
            torch.where(pick, self.base_v[head, lo], self.suf_v[head, hi]),
        )


class Sketch:
    """A bfloat16 copy of a layer's keys, scanned to find DIPR candidates cheaply.

    ``norms`` holds each key's norm: a bfloat16 score is within ``SKETCH_ERROR·|q|·|k|`` of the
    exact one, so widening the threshold by that much keeps every key exact DIPR would keep (the
    candidates are then scored exactly).
    """

    def __init__(self, layer: BufferedLayer) -> None:
        rows = layer.rows()
        h, d = rows.suf_k.shape[0], rows.suf_k.shape[-1]
        cap = max(256, rows.n + rows.n // 4)
        # Stored d-major (H, d, n): a slice of it is a plain strided matrix to the GEMM, where a
        # slice of (H, n, d) made oneDNN copy it first (5x slower).
        self.keys = torch.zeros((h, d, cap), dtype=torch.bfloat16)
        self.norms = torch.zeros((h, cap))
        self.n = 0
        step = 4096  # convert in slices: no float32 temporary of the whole layer
        for a in range(0, rows.n, step):
            k, _ = rows.span(a, min(rows.n, a + step))
            self._put(a, k)
        self.n = rows.n
        if layer.release is not None:
            # The exact keys were read once to build this; let the kernel take their pages back.
            layer.release()

    def _put(self, a: int, keys: torch.Tensor) -> None:
        self.keys[:, :, a : a + keys.shape[1]] = keys.transpose(1, 2)
        self.norms[:, a : a + keys.shape[1]] = keys.float().norm(dim=-1)

    def extend(self, layer: BufferedLayer) -> None:
        """Add the tokens appended since the last call."""
        n = layer.get_seq_length()
        if n <= self.n:
            return
        if n > self.keys.shape[-1]:
            h, d, cap = self.keys.shape[0], self.keys.shape[1], n + n // 4
            grown = torch.zeros((h, d, cap), dtype=torch.bfloat16)
            grown[..., : self.n] = self.keys[..., : self.n]
            norms = torch.zeros((h, cap))
            norms[:, : self.n] = self.norms[:, : self.n]
            self.keys, self.norms = grown, norms
        k, _ = layer.rows().span(self.n, n)
        self._put(self.n, k)
        self.n = n

    def truncate(self, n: int) -> None:
        self.n = min(self.n, n)

    def scores(self, q: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate scores (H, g, b − a) of positions [a, b) and their error bounds.

        The product runs over a span rounded up to a multiple of ``BUCKET`` rows, so its shape
        changes once per ``BUCKET`` tokens: oneDNN compiles and caches a kernel per shape, and
        a new shape at every step cost time and memory.
        """
        hi = min(self.keys.shape[-1], a + -(-(b - a) // BUCKET) * BUCKET)
        approx = (q.to(torch.bfloat16) @ self.keys[..., a:hi])[..., : b - a]
        err = SKETCH_ERROR * q.norm(dim=-1).unsqueeze(-1) * self.norms[:, a:b].unsqueeze(1)
        return approx.float(), err
