"""Settings of sparse decoding and the per-step statistics it reports (no torch needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ..errors import ConfigError
from ._dipr import beta_from_alpha, beta_from_tau

__all__ = ["LayerStats", "Mode", "SparseConfig", "StepStats", "choose_mode"]

Mode = Literal["auto", "full", "flat", "graph"]


@dataclass(frozen=True)
class SparseConfig:
    """How a decode step picks the keys it attends.

    Give ``alpha`` (keep keys whose weight is ≥ α × the largest) or ``tau`` (β = τ·√d), not both
    (neither means α = 1e-3);
    ``alpha=0`` or ``tau=inf`` means β = ∞, exact attention through the sparse path.
    ``layer_alpha`` ({layer: α}) overrides both for the layers it names: layers differ in how broad
    their attention is and in how much an error in them moves the logits, so one α is not the best
    use of a key budget (``calibrate_alpha`` measures both and picks an α per layer). The first
    ``n_init`` and last ``n_last`` tokens are always attended exactly. A long recent window buys
    more agreement per attended key than a looser α: on SmolLM2 at 8K tokens, window 512 with
    α = 1e-3 agreed with full attention on 98.4% of 512 next tokens at 9.7% of keys attended, where
    window 64 needed α = 1e-4 and 11.6% for the same (benchmarks/attention/quality.py). ``mode="auto"`` uses full
    attention below ``full_below`` keys, a flat scan on ``flat_layers`` and on contexts without an
    index of at least ``graph_min`` keys, and the graph index otherwise. The graph scores a small
    share of the keys but reads them at random; on a CPU the one-product scan is as fast up to
    tens of thousands of keys (at 8K, SmolLM2 decodes faster by scan than by graph; synthetic keys
    put the break-even between 32K and 128K: benchmarks/attention/graph_speed.py), hence 64K.
    A flat scan over at least ``sketch_min`` middle keys scores a low-precision copy of the keys
    and reads the exact keys and values only of the candidates it finds; its threshold is widened
    by the copy's error bound, so it attends exactly the keys the float32 scan would. Over a stored
    float32 context the copy is the int8 sketch stored with it, scored by a compiled kernel
    (``_stream_scan``); otherwise a bfloat16 copy built once per layer. ``release_pages``: after
    each layer of a step over a stored context, give the pages it read back to the kernel, so the
    context is not resident (re-reading them from the page cache costs time at every step: keep
    them where memory allows; benchmarks/attention/long_context.py). ``sketch_resident_bytes``: with
    pages given back, the int8 sketches of the first layers that fit in this many bytes stay
    mapped (resident) between steps instead of being read again at each one (0: none).
    """

    alpha: float | None = None
    tau: float | None = None
    n_init: int = 4
    n_last: int = 512
    mode: Mode = "auto"
    full_below: int = 512
    graph_min: int = 65536
    flat_layers: tuple[int, ...] = (0,)
    capacity: int = 128
    max_queries: int = 2048
    # Not hashed: a read-only mapping is not hashable, and equal configs still compare equal.
    layer_alpha: Mapping[int, float] = field(default_factory=dict, hash=False)
    sketch_min: int = 8192
    release_pages: bool = True
    sketch_resident_bytes: int = 0

    def __post_init__(self) -> None:
        if self.alpha is not None and self.tau is not None:
            raise ConfigError("give alpha or tau, not both")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.tau is not None and self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau}")
        if self.n_init < 0 or self.n_last < 1:
            raise ConfigError("n_init must be >= 0 and n_last >= 1 (the newest token is attended)")
        if self.mode not in ("auto", "full", "flat", "graph"):
            raise ConfigError(f"mode must be auto, full, flat or graph, got {self.mode!r}")
        if self.sketch_min < 0 or self.sketch_resident_bytes < 0:
            raise ConfigError("sketch_min and sketch_resident_bytes must be >= 0")
        if self.capacity < 1 or self.max_queries < 0:
            raise ConfigError("capacity must be >= 1 and max_queries >= 0")
        layer_alpha = {int(k): float(v) for k, v in dict(self.layer_alpha).items()}
        for layer, alpha in layer_alpha.items():
            if layer < 0 or not 0.0 <= alpha <= 1.0:
                raise ConfigError(
                    f"layer_alpha needs layers >= 0 and α in [0, 1], got {layer}: {alpha}"
                )
        # A private copy behind a read-only view keeps the frozen config from changing under us.
        object.__setattr__(self, "layer_alpha", MappingProxyType(layer_alpha))

    def beta(self, head_dim: int, scaling: float, layer: int | None = None) -> float:
        """β in raw dot-product units for a layer of this head size and softmax scaling."""
        if layer is not None and layer in self.layer_alpha:
            alpha = self.layer_alpha[layer]
            return beta_from_alpha(alpha, head_dim, scaling) if alpha > 0 else math.inf
        if self.tau is not None:
            return beta_from_tau(self.tau, head_dim)
        alpha = 1e-3 if self.alpha is None else self.alpha
        return beta_from_alpha(alpha, head_dim, scaling) if alpha > 0 else math.inf


def choose_mode(layer_idx: int, n_keys: int, n_indexed: int, config: SparseConfig) -> Mode:
    """The rule: full for short contexts, flat for the flat layers and small indexes, else graph."""
    if config.mode != "auto":
        if config.mode == "graph" and n_indexed == 0:
            return "flat"
        return config.mode
    if n_keys < config.full_below:
        return "full"
    if layer_idx in config.flat_layers or n_indexed < config.graph_min:
        return "flat"
    return "graph"


@dataclass(frozen=True)
class LayerStats:
    """One layer of one decode step: per query head, keys DIPR selected and keys it scored.

    ``window`` keys were attended exactly besides the ``selected`` ones; ``total`` keys existed.
    In full mode every key is in the window and none is selected or touched by a search.
    """

    layer: int
    mode: Mode
    total: int
    window: int
    selected: tuple[int, ...]
    touched: tuple[int, ...]

    @property
    def attended_fraction(self) -> float:
        """Share of the keys whose values entered the output (window + mean selected)."""
        return _share(self.window, self.selected, self.total)

    @property
    def touched_fraction(self) -> float:
        """Share of the keys scored against the query (window + mean touched)."""
        return _share(self.window, self.touched, self.total)


def _share(window: int, per_head: tuple[int, ...], total: int) -> float:
    if total == 0:
        return 0.0
    mean = sum(per_head) / len(per_head) if per_head else 0.0
    return min(1.0, (window + mean) / total)


@dataclass(frozen=True)
class StepStats:
    """Statistics of one decode step over every layer."""

    step: int
    layers: tuple[LayerStats, ...]

    @property
    def attended_fraction(self) -> float:
        if not self.layers:
            return 0.0
        return sum(s.attended_fraction for s in self.layers) / len(self.layers)

    @property
    def touched_fraction(self) -> float:
        if not self.layers:
            return 0.0
        return sum(s.touched_fraction for s in self.layers) / len(self.layers)
