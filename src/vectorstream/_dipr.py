"""The Dynamic Inner Product Range rule, once: keep every score ``>= best - beta``.

DIPR(q, β) is every key k with ``q·k ≥ max_j q·k_j − β``. Stores (native range queries and the
cut after a top-k), search and the attention module all apply this one rule, through
``threshold`` and ``within``; both work on Python floats, numpy arrays and torch tensors alike
(they only subtract and compare), so the attention kernels call them on whole tensors at no cost.

``alpha_to_beta``: with softmax weights ``w_i ∝ exp(s_i / T)``, ``w_i >= α · w_max`` is exactly
``s_i >= s_max + T·ln α``, so ``β = −T·ln α``. Attention scores are raw dot products scaled by
``1/√d``, so there ``T = √d`` (the scaling's inverse in general). Search scores are cosine
similarities, ranked by the softmax such models are trained under: sentence-transformers' default
contrastive loss (MultipleNegativesRankingLoss, scale 20) has ``T = 0.05``, the default here:
``α = 0.1`` gives ``β ≈ 0.115`` and ``α = 0.5`` gives ``β ≈ 0.035``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["DEFAULT_TEMPERATURE", "alpha_to_beta", "check_beta", "threshold", "within"]

DEFAULT_TEMPERATURE = 0.05


def alpha_to_beta(alpha: float, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """The range width for "softmax weight >= ``alpha`` x the best weight", α in (0, 1]."""
    if not isinstance(alpha, int | float | np.floating) or not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be in (0, 1], got {alpha!r}")
    if not temperature > 0 or math.isinf(temperature):
        raise ConfigError(f"temperature must be positive and finite, got {temperature!r}")
    return -float(temperature) * math.log(alpha) + 0.0  # + 0.0: α = 1 gives 0.0, not -0.0


def check_beta(beta: Any) -> float:
    """A range width as a float: a number ``>= 0`` (infinity means everything), else ``ConfigError``."""
    if isinstance(beta, bool) or not isinstance(beta, int | float | np.integer | np.floating):
        raise ConfigError(f"beta must be a number >= 0, got {beta!r}")
    if math.isnan(beta) or beta < 0:
        raise ConfigError(f"beta must be a number >= 0, got {beta!r}")
    return float(beta)


def threshold(best: Any, beta: float) -> Any:
    """The lowest score still in range: ``best - beta`` (``-inf`` when beta is infinite)."""
    return best - beta


def within(scores: Any, best: Any, beta: float) -> Any:
    """Which ``scores`` are in range of ``best``: a bool, or a mask shaped like ``scores``."""
    return scores >= threshold(best, beta)
