"""The DIPR graph search compiled with numba: the numpy ``KeyGraph.search`` rule, step for step.

One call searches the query heads of one KV head (``search_many``): the buffers are allocated once
per call and reused by every query, and the visited set is an epoch array (a key is visited by the
current query when its stamp equals the query's), so nothing is cleared between queries. The kernels
release the GIL.

The kernels mirror the numpy reference: the same starting beam (in the same order), the same
expansion of the first ``max(expand, open // 4)`` open candidates, the same two-hop step over
neighbours at or beyond the filter, the same stable ordering (ties keep the beam first, new keys in
ascending position) and the same truncation to ``max(capacity, keys within beta)``. Thresholds are
compared in float32, as numpy compares a float32 array with a Python float. Only the dot products
differ: numpy's BLAS sums in its own order, so a score can differ from numpy's in the last bit.

numba is optional (the ``attention`` extra installs it): without it ``AVAILABLE`` is false and
``KeyGraph`` runs the numpy reference.
"""

from __future__ import annotations

import logging

import numpy as np

from .._dipr import threshold as dipr_threshold
from ._compiled import AVAILABLE as COMPILED
from ._compiled import jit

log = logging.getLogger("vectorstream.attention.graph")

AVAILABLE = COMPILED

__all__ = ["AVAILABLE", "search_many"]

_Count = int | np.int64  # counts start as np.int64(0) in the kernels (see ``zero``)


def _dot_py(keys: np.ndarray, row: int, q: np.ndarray) -> np.float32:
    acc = np.float32(0.0)
    for t in range(q.shape[0]):
        acc += keys[row, t] * q[t]
    return acc


# The DIPR rule's one definition, compiled into the kernels (numba inlines it).
_threshold = jit(dipr_threshold)

# Summing in any order is as good as BLAS's (whose order is its own): let LLVM vectorise the sum.
_dot = jit(_dot_py, fastmath={"reassoc"})


# Sorting: a candidate is packed into one uint64 key, its score's order bits above a tiebreak (its
# position, or its place in the start), and the keys sorted in place. Scores are float32; their bits
# are read through a uint32 view of a float32 array.
_LOW = np.uint64(0xFFFFFFFF)
_SIGN = np.uint64(0x80000000)
_SHIFT = np.uint64(32)


@jit
def _order(bits: np.uint64) -> np.uint64:
    """float32 bits as an unsigned int ordered as the floats are; −0.0 must be +0.0 already."""
    if bits & _SIGN:
        return ~bits & _LOW
    return bits | _SIGN


@jit
def _unorder(order: np.uint64) -> np.uint32:
    if order & _SIGN:
        return np.uint32(order & ~_SIGN & _LOW)
    return np.uint32(~order & _LOW)


@jit
def _sort_keys(a: np.ndarray, m: _Count, stack: np.ndarray) -> None:
    """Sort the distinct ``a[:m]`` ascending in place: quicksort, insertion sort for short runs.

    (numba's ``ndarray.sort`` is no faster here and takes seconds more to compile.) ``stack``
    holds 128 int64: the larger part waits there while the smaller is sorted, so at most 64 wait.
    """
    lo, hi, top = 0, m - 1, 0
    while True:
        while hi - lo >= 16:
            mid = (lo + hi) >> 1
            if a[mid] < a[lo]:
                a[mid], a[lo] = a[lo], a[mid]
            if a[hi] < a[lo]:
                a[hi], a[lo] = a[lo], a[hi]
            if a[hi] < a[mid]:
                a[hi], a[mid] = a[mid], a[hi]
            pivot = a[mid]
            i, j = lo, hi
            while i <= j:
                while a[i] < pivot:
                    i += 1
                while a[j] > pivot:
                    j -= 1
                if i <= j:
                    a[i], a[j] = a[j], a[i]
                    i += 1
                    j -= 1
            if j - lo < hi - i:
                stack[top], stack[top + 1] = i, hi
                hi = j
            else:
                stack[top], stack[top + 1] = lo, j
                lo = i
            top += 2
        for k in range(lo + 1, hi + 1):
            x = a[k]
            i = k - 1
            while i >= lo and a[i] > x:
                a[i + 1] = a[i]
                i -= 1
            a[i + 1] = x
        if top == 0:
            return
        top -= 2
        lo, hi = stack[top], stack[top + 1]


@jit
def _merge_into(
    ids: np.ndarray,
    sc: np.ndarray,
    op: np.ndarray,
    size: int,
    h_ids: np.ndarray,
    h_sc: np.ndarray,
    m: _Count,
) -> None:
    """Merge the m new keys (best first, all open) into the beam ``[:size]``, in place from the end.

    On ties the beam's keys come first (a stable sort of beam + new keys); the beam's keys above
    the best new one stay where they are.
    """
    i, j, o = size - 1, m - 1, size + m - 1
    while j >= 0:
        if i >= 0 and sc[i] < h_sc[j]:
            ids[o], sc[o], op[o] = ids[i], sc[i], op[i]
            i -= 1
        else:
            ids[o], sc[o], op[o] = h_ids[j], h_sc[j], 1
            j -= 1
        o -= 1


@jit
def _search_many(
    keys: np.ndarray,
    nbr: np.ndarray,
    start: np.ndarray,
    queries: np.ndarray,
    seeds: np.ndarray,
    beta: float,
    capacity: int,
    upper: int,
    expand: int,
    packed: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DIPR graph search of each query: (positions, scores, offsets (g + 1,), touched (g,))."""
    n, width = nbr.shape
    g = queries.shape[0]
    s = start.shape[0]
    cap = s + upper  # every key enters the beam at most once, the start (maybe repeated) aside
    stamp = np.zeros(n, dtype=np.int32)  # visited by query j when stamp == j + 1
    b_ids = np.empty(cap, dtype=np.int64)  # the beam, best first (once the first step sorted it)
    b_sc = np.empty(cap, dtype=np.float32)
    b_op = np.empty(cap, dtype=np.uint8)  # not expanded yet
    s_ids = np.empty(s, dtype=np.int64)  # the start, while it is sorted
    s_sc = np.empty(s, dtype=np.float32)
    s_op = np.empty(s, dtype=np.uint8)
    h_ids = np.empty(upper, dtype=np.int64)  # the keys one step scores
    h_sc = np.empty(upper, dtype=np.float32)
    h_bits = h_sc.view(np.uint32)
    v_ids = np.empty(cap, dtype=np.int64)  # every key a query scored, in order
    v_sc = np.empty(cap, dtype=np.float32)
    v_bits = v_sc.view(np.uint32)
    order = np.empty(cap, dtype=np.uint64)  # sort keys
    stack = np.empty(128, dtype=np.int64)
    one = np.empty(1, dtype=np.float32)  # one score, to read its bits
    one_bits = one.view(np.uint32)
    out_ids = np.empty(max(16, min(g * upper, 4096)), dtype=np.int64)
    out_sc = np.empty(out_ids.shape[0], dtype=np.float32)
    offsets = np.zeros(g + 1, dtype=np.int64)
    touched = np.zeros(g, dtype=np.int64)
    # Counts passed to kernels start from a numpy zero: numba would compile a callee once more for
    # a literal 0 argument.
    zero = np.int64(0)
    plus_zero = np.float32(0.0)  # x + 0.0 turns −0.0 into +0.0 (they tie, as numpy's sort has it)
    for j in range(g):
        q = queries[j]
        mark = np.int32(j + 1)
        best = seeds[j]
        nv = 0
        for i in range(s):
            u = start[i]
            sc = _dot(keys, u, q) + plus_zero
            b_ids[i], b_sc[i], b_op[i] = u, sc, 1
            if stamp[u] != mark:
                stamp[u] = mark
                v_ids[nv], v_sc[nv] = u, sc
                nv += 1
        for i in range(s):
            if b_sc[i] > best:
                best = float(b_sc[i])
        size = s
        count = s
        n_open = s
        ordered = False  # the start is in entry order until the first step with new keys
        while n_open > 0:
            take = max(expand, n_open // 4)
            m = zero
            for i in range(size):
                if take == 0:
                    break
                if b_op[i] == 0:
                    continue
                b_op[i] = 0
                take -= 1
                n_open -= 1
                u = b_ids[i]
                for r in range(width):
                    v = nbr[u, r]
                    if v < 0:
                        if packed:  # the rest of the row is padding
                            break
                        continue
                    if v < upper:
                        if stamp[v] != mark:
                            stamp[v] = mark
                            h_ids[m] = v
                            m += 1
                        continue
                    for r2 in range(width):  # beyond the filter: step over to its neighbours
                        w = nbr[v, r2]
                        if 0 <= w < upper and stamp[w] != mark:
                            stamp[w] = mark
                            h_ids[m] = w
                            m += 1
            if m == 0:
                continue
            for i in range(m):
                sc = _dot(keys, h_ids[i], q) + plus_zero
                h_sc[i] = sc
                if sc > best:
                    best = float(sc)
                order[i] = ((_LOW - _order(np.uint64(h_bits[i]))) << _SHIFT) | np.uint64(h_ids[i])
            count += m
            # The new keys best first, ties by position (numpy's np.unique order) ...
            _sort_keys(order, m, stack)
            for i in range(m):
                key = order[i]
                h_ids[i] = np.int64(key & _LOW)
                h_bits[i] = _unorder(_LOW - (key >> _SHIFT))
                v_ids[nv], v_sc[nv] = h_ids[i], h_sc[i]
                nv += 1
            if not ordered:  # ... the start best first, ties in entry order ...
                for i in range(size):
                    s_ids[i], s_sc[i], s_op[i] = b_ids[i], b_sc[i], b_op[i]
                    one[0] = s_sc[i]
                    order[i] = ((_LOW - _order(np.uint64(one_bits[0]))) << _SHIFT) | np.uint64(i)
                _sort_keys(order, size, stack)
                for i in range(size):
                    at = order[i] & _LOW
                    b_ids[i], b_sc[i], b_op[i] = s_ids[at], s_sc[at], s_op[at]
                ordered = True
            # ... and merged in after the beam's ties: numpy's stable argsort of beam + new keys.
            _merge_into(b_ids, b_sc, b_op, size, h_ids, h_sc, m)
            total = size + m
            n_open += m
            # Keep max(capacity, keys within beta): those are a prefix of the sorted beam.
            threshold = np.float32(_threshold(best, beta))
            lo, hi = 0, total
            while lo < hi:
                mid = (lo + hi) >> 1
                if b_sc[mid] >= threshold:
                    lo = mid + 1
                else:
                    hi = mid
            size = min(total, max(capacity, lo))
            for i in range(size, total):
                n_open -= b_op[i]
        touched[j] = count
        # The keys within beta of the final best, by position.
        threshold = np.float32(_threshold(best, beta))
        found = zero
        for i in range(nv):
            if v_sc[i] >= threshold:
                order[found] = (np.uint64(v_ids[i]) << _SHIFT) | np.uint64(v_bits[i])
                found += 1
        _sort_keys(order, found, stack)
        lo = offsets[j]
        if lo + found > out_ids.shape[0]:
            grown = max(2 * out_ids.shape[0], lo + found)
            grown_ids = np.empty(grown, dtype=np.int64)
            grown_sc = np.empty(grown, dtype=np.float32)
            for i in range(lo):
                grown_ids[i], grown_sc[i] = out_ids[i], out_sc[i]
            out_ids, out_sc = grown_ids, grown_sc
        out_bits = out_sc.view(np.uint32)
        for i in range(found):
            out_ids[lo + i] = np.int64(order[i] >> _SHIFT)
            out_bits[lo + i] = np.uint32(order[i] & _LOW)
        offsets[j + 1] = lo + found
    return out_ids, out_sc, offsets, touched


def search_many(
    keys: np.ndarray,
    neighbors: np.ndarray,
    start: np.ndarray,
    queries: np.ndarray,
    seeds: np.ndarray,
    beta: float,
    capacity: int,
    upper: int,
    expand: int,
    packed: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the compiled search: (positions, scores, offsets (g + 1,), keys touched (g,)).

    Arrays must be C-contiguous float32 (keys, queries), int32 (neighbours, ``packed`` when each
    row's padding comes after its neighbours), int64 (start) and float64 (seeds); ``keys`` must hold
    at least ``upper`` rows and the neighbours must be valid positions (nothing is bounds-checked).
    Query j's results are ``positions[offsets[j]:offsets[j + 1]]``.
    """
    return _search_many(
        keys,
        neighbors,
        start,
        queries,
        seeds,
        float(beta),
        int(capacity),
        int(upper),
        int(expand),
        bool(packed),
    )
