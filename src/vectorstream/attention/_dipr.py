"""Dynamic Inner Product Range (DIPR) in numpy: the rule, its parameters and the flat scan.

DIPR(q, β) returns every key k with ``q·k ≥ max_j q·k_j − β``. With softmax scaling ``s`` the
attention weight of k relative to the best key is ``exp(s·(q·k − max))``, so keeping every key whose
weight is at least ``α`` times the largest one means ``β = −ln(α) / s``; for the usual ``s = 1/√d``
that is ``β = −√d·ln α``. τ is β per √d, the same threshold in units that do not depend on d.

The rule itself and the α → β conversion live once, in ``vectorstream._dipr``, shared with the
stores and search; this module gives them the attention module's parameters.
"""

from __future__ import annotations

import math

import numpy as np

from .._dipr import alpha_to_beta, check_beta, within
from ..errors import ConfigError

__all__ = [
    "beta_from_alpha",
    "beta_from_tau",
    "dipr",
    "dipr_scores",
    "window_positions",
]


def beta_from_alpha(alpha: float, head_dim: int, scaling: float | None = None) -> float:
    """β for "weight ≥ α × the largest weight"; ``α = 0`` means every key (β = ∞).

    Softmax scaling ``s`` is a temperature of ``1/s`` (``√d`` by default) in ``alpha_to_beta``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if head_dim <= 0:
        raise ConfigError(f"head_dim must be positive, got {head_dim}")
    if alpha == 0.0:
        return math.inf
    s = scaling if scaling is not None else 1.0 / math.sqrt(head_dim)
    return alpha_to_beta(alpha, 1.0 / s)


def beta_from_tau(tau: float, head_dim: int) -> float:
    """β = τ·√d; τ = ∞ gives β = ∞ (full attention)."""
    if tau < 0:
        raise ConfigError(f"tau must be >= 0, got {tau}")
    if head_dim <= 0:
        raise ConfigError(f"head_dim must be positive, got {head_dim}")
    return tau * math.sqrt(head_dim)


def dipr_scores(scores: np.ndarray, beta: float, seed: float = -math.inf) -> np.ndarray:
    """Indices of ``scores`` within ``beta`` of the best, where the best also counts ``seed``.

    ``seed`` is a score known from elsewhere (the exact window's maximum): it raises the threshold
    without being a candidate itself.
    """
    beta = check_beta(beta)
    if scores.size == 0:
        return np.empty(0, dtype=np.int64)
    best = max(float(scores.max()), seed)
    if math.isinf(beta):
        return np.arange(scores.shape[-1], dtype=np.int64)
    return np.flatnonzero(within(scores, best, beta))


def dipr(
    query: np.ndarray,
    keys: np.ndarray,
    beta: float,
    *,
    seed: float = -math.inf,
    limit: int | None = None,
) -> np.ndarray:
    """Flat DIPR: the indices of ``keys`` (n, d) with ``query·k ≥ max − beta``, in ascending order.

    One matrix-vector product answers the query exactly. ``limit`` keeps only positions
    ``< limit`` (the filter a partially reused context applies), which equals DIPR over the prefix.
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    k = np.asarray(keys, dtype=np.float32)
    if k.ndim != 2 or k.shape[1] != q.shape[0]:
        raise ConfigError(f"keys must be (n, {q.shape[0]}), got {k.shape}")
    if limit is not None:
        k = k[: max(0, limit)]
    return dipr_scores(k @ q, beta, seed)


def window_positions(n: int, n_init: int, n_last: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into (window, middle).

    The window is the first ``n_init`` and the last ``n_last`` positions (attended exactly); the
    middle, between them, is what DIPR selects from. The two are disjoint and cover ``0..n-1``.
    """
    if n_init < 0 or n_last < 0:
        raise ConfigError(f"window sizes must be >= 0, got n_init={n_init}, n_last={n_last}")
    head = min(n_init, n)
    tail_start = max(head, n - n_last)
    window = np.concatenate([np.arange(head), np.arange(tail_start, n)]).astype(np.int64)
    middle = np.arange(head, tail_start, dtype=np.int64)
    return window, middle
