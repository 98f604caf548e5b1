"""The flat DIPR step over a stored context, compiled: an int8 sketch scored, candidates read exactly.

A stored context keeps, beside its float keys, an int8 copy of them with one scale per key
(``KeySketch``, a quarter of the keys' bytes). A decode step over a long context:

0. scores the window (the first and the latest tokens) exactly; its best score seeds the
   threshold;
1. scores every middle key against the int8 copy. The exact score differs from the sketch's by
   at most ``0.5 · scale · ‖q‖₁`` (each component is rounded by at most half a step), so a key
   whose upper bound stays below the best lower bound minus β cannot be in the DIPR set;
2. reads the float keys of the remaining candidates (rows of the memory-mapped file), scores them
   exactly and keeps those DIPR keeps against the exact best (the best key is always a candidate:
   its upper bound reaches the best lower bound);
3. attends the window and the kept keys' values in one pass, shifted by the exact best.

The keys it attends are the ones the exact flat scan attends, with the same float32 scores up to
summation order. Stored keys and values are float32, or float16 (half the pages a step touches)
passed as their ``uint16`` bits and widened exactly in the kernel (``_widen``). One compiled
call per layer, all KV heads, the GIL released: a decode step at 32K
tokens makes 30 calls instead of hundreds of small tensor operations, and reads the file's rows
in place (the session then hands the layer's pages back, ``StoredLayer.release``, so a long
context does not become resident).

numba is optional (the ``attention`` extra installs it): without it ``AVAILABLE`` is false and the
session scans with torch (``_scan.scan_step``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._compiled import AVAILABLE as COMPILED
from ._compiled import jit

log = logging.getLogger("vectorstream.attention.stream_scan")

AVAILABLE = COMPILED

__all__ = ["AVAILABLE", "KeySketch", "StreamResult", "quantize_keys", "stream_scan"]

# A bound a hair wider than half a step: the float32 products and sums round too.
_HALF_STEP = np.float32(0.5 * (1 + 2.0**-10))
# float16 bits moved into a float32's exponent and mantissa read 2^-112 times the value (normal
# and subnormal alike), so one multiply by a power of two makes the widening exact.
_HALF_BIAS = np.float32(2.0**112)


def _widen(x: np.generic) -> np.float32:
    """A stored element as float32: float32 as is, ``uint16`` as the bits of a float16."""
    if isinstance(x, np.uint16):
        return np.float32(np.array(x, dtype=np.uint16).view(np.float16)[()])
    return np.float32(x)


if COMPILED:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload

    def _float_bits_typer(typingctx: Any, bits: Any) -> Any:
        """The float32 whose bits are the low 32 of ``bits`` (LLVM bitcast, no conversion)."""
        width = getattr(bits, "bitwidth", None)  # the stubs type numba's Integer as numpy's
        if not isinstance(bits, types.Integer) or width is None:
            return None

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: list[Any]) -> Any:
            value = args[0]
            if width > 32:
                value = builder.trunc(value, ir.IntType(32))
            elif width < 32:
                value = builder.zext(value, ir.IntType(32))
            return builder.bitcast(value, ir.FloatType())

        return types.float32(bits), codegen

    _float_bits: Any = intrinsic(_float_bits_typer)

    @overload(_widen, inline="always")
    def _widen_compiled(x: Any) -> Any:  # numba matches the impls' signatures to this
        if x == types.uint16:

            def half(x: Any) -> Any:
                b = np.uint32(x)
                sign = (b & np.uint32(0x8000)) << np.uint32(16)
                rest = (b & np.uint32(0x7FFF)) << np.uint32(13)
                return _float_bits(sign | rest) * _HALF_BIAS

            return half
        if isinstance(x, types.Float):

            def same(x: Any) -> Any:
                return np.float32(x)

            return same
        return None


def quantize_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rows of ``keys`` (..., n, d) and one float32 scale per row (..., n)."""
    keys = np.asarray(keys, dtype=np.float32)
    peak = np.abs(keys).max(axis=-1)
    scale = (peak / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.rint(keys / safe[..., None]).clip(-127, 127).astype(np.int8)
    return q, scale


@dataclass(frozen=True)
class KeySketch:
    """One layer's int8 keys (H, n, d) and their scales (H, n), typically memory-mapped."""

    codes: np.ndarray
    scales: np.ndarray


@dataclass(frozen=True)
class StreamResult:
    """A layer's attention output (H, g, d_v), and per query head keys kept and candidates read."""

    out: torch.Tensor
    selected: tuple[int, ...]
    exact: tuple[int, ...]


def _scan_py(
    q: np.ndarray,
    codes: np.ndarray,
    scales: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    lo: int,
    hi: int,
    k_win: np.ndarray,
    v_win: np.ndarray,
    beta: np.float32,
    scaling: np.float32,
    out: np.ndarray,
    kept: np.ndarray,
    read: np.ndarray,
) -> None:
    n_heads, g, d = q.shape
    m = hi - lo
    dv = values.shape[-1]
    n_win = k_win.shape[1]
    win = np.empty((g, n_win), dtype=np.float32)
    best = np.empty(g, dtype=np.float32)
    approx = np.empty((g, m), dtype=np.float32)
    q1 = np.empty(g, dtype=np.float32)
    lower = np.empty(g, dtype=np.float32)
    top = np.empty(g, dtype=np.float32)
    acc = np.empty((g, dv), dtype=np.float32)
    total = np.empty(g, dtype=np.float64)
    cand = np.empty(m, dtype=np.int64)
    exact = np.empty((g, m), dtype=np.float32)
    for h in range(n_heads):
        # 0. the window, exactly: its best score seeds the threshold
        for j in range(g):
            best[j] = -np.inf
            for iw in range(n_win):
                e = np.float32(0.0)
                for t in range(d):
                    e += q[h, j, t] * k_win[h, iw, t]
                win[j, iw] = e
                if e > best[j]:
                    best[j] = e
        for j in range(g):
            s = np.float32(0.0)
            for t in range(d):
                s += abs(q[h, j, t])
            q1[j] = s * _HALF_STEP
            lower[j] = best[j]
        # 1. the sketch: approximate scores and the best lower bound
        for i in range(m):
            row = lo + i
            sc = scales[h, row]
            for j in range(g):
                a = np.float32(0.0)
                for t in range(d):
                    a += q[h, j, t] * np.float32(codes[h, row, t])
                a *= sc
                approx[j, i] = a
                if a - sc * q1[j] > lower[j]:
                    lower[j] = a - sc * q1[j]
        # 2. candidates: some query head's upper bound reaches its floor
        nc = 0
        for i in range(m):
            sc = scales[h, lo + i]
            for j in range(g):
                if approx[j, i] + sc * q1[j] >= lower[j] - beta:
                    cand[nc] = lo + i
                    nc += 1
                    break
        read[h] = nc
        for j in range(g):
            top[j] = best[j]
        for c in range(nc):
            row = cand[c]
            for j in range(g):
                e = np.float32(0.0)
                for t in range(d):
                    e += q[h, j, t] * _widen(keys[h, row, t])
                exact[j, c] = e
                if e > top[j]:
                    top[j] = e
        # 3. attend the window and the kept keys, shifted by the exact best (every kept logit is
        # within β of it)
        for j in range(g):
            total[j] = 0.0
            kept[h, j] = 0
            for t in range(dv):
                acc[j, t] = 0.0
            for iw in range(n_win):
                wt = np.float32(math.exp((win[j, iw] - top[j]) * scaling))
                total[j] += wt
                for t in range(dv):
                    acc[j, t] += wt * v_win[h, iw, t]
        for c in range(nc):
            row = cand[c]
            for j in range(g):
                e = exact[j, c]
                if e >= top[j] - beta:
                    w = np.float32(math.exp((e - top[j]) * scaling))
                    total[j] += w
                    kept[h, j] += 1
                    for t in range(dv):
                        acc[j, t] += w * _widen(values[h, row, t])
        for j in range(g):
            if total[j] == 0.0:  # no window and no key kept: nothing to attend
                for t in range(dv):
                    out[h, j, t] = 0.0
            else:
                for t in range(dv):
                    out[h, j, t] = acc[j, t] / np.float32(total[j])


_scan = jit(_scan_py, fastmath={"reassoc", "contract"})


def stream_scan(
    q: torch.Tensor,
    sketch: KeySketch,
    keys: np.ndarray,
    values: np.ndarray,
    lo: int,
    hi: int,
    k_win: torch.Tensor,
    v_win: torch.Tensor,
    beta: float,
    scaling: float,
) -> StreamResult:
    """Attention of queries ``q`` (H, g, d) over one layer: the window exactly, [lo, hi) by DIPR.

    ``keys``/``values`` (H, n, d), float32 or float16, and the sketch are read in place (memory
    maps); ``k_win`` and
    ``v_win`` (H, w, d) are the window's keys and values, whose best exact score seeds the
    threshold. Returns the attention output over the window and the kept keys together.
    """
    h, g, _ = q.shape
    dv = values.shape[-1]
    out = np.empty((h, g, dv), dtype=np.float32)
    kept = np.zeros((h, g), dtype=np.int64)
    read = np.zeros(h, dtype=np.int64)
    b = float("inf") if math.isinf(beta) else beta
    if keys.dtype == np.float16:  # the kernel widens the bits itself (numba has no float16)
        keys, values = keys.view(np.uint16), values.view(np.uint16)
    _scan(
        np.ascontiguousarray(q.detach().float().numpy()),
        sketch.codes,
        sketch.scales,
        keys,
        values,
        lo,
        hi,
        np.ascontiguousarray(k_win.detach().float().numpy()),
        np.ascontiguousarray(v_win.detach().float().numpy()),
        np.float32(b),
        np.float32(scaling),
        out,
        kept,
        read,
    )
    selected = tuple(int(x) for x in kept.reshape(-1))
    exact = tuple(int(read[i]) for i in range(h) for _ in range(g))
    return StreamResult(torch.from_numpy(out), selected, exact)
