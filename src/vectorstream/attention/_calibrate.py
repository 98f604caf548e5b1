"""``calibrate_alpha``: an α per layer that spends a key budget where the model needs it.

One α for every layer treats them alike, but they are not: a layer with broad attention keeps many
keys at a given α, and an error in some layers moves the next-token distribution more than in
others. Calibration measures both, one layer at a time: every other layer attends exactly while
this one runs DIPR at each candidate α over a few teacher-forced steps, giving the layer's share of
keys attended and the KL divergence its sparsity alone causes. Small errors of different layers add
up nearly independently (KL is second order in the logit change), so the per-layer KLs are summed
and the α of each layer chosen to minimise that sum within the budget (a multiple-choice knapsack,
solved exactly by dynamic programming).

The cost is one teacher-forced pass per layer and candidate α: layers × alphas × steps decode steps
per calibration text (SmolLM2-135M, 30 layers, 5 α, 32 steps, 8K tokens: about 15 minutes on two
CPU cores). Calibrate once per model, window and context length, then reuse the mapping.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ._config import SparseConfig
from ._integration import ATTENTION_NAME, forward, register
from ._session import Session

__all__ = ["Calibration", "LayerCost", "allocate_alpha", "calibrate_alpha", "measure_layer_costs"]

log = logging.getLogger("vectorstream.attention.calibrate")

DEFAULT_ALPHAS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
RESOLUTION = 1e-4  # the budget's unit in the allocation, as a share of one layer's keys


@dataclass(frozen=True)
class LayerCost:
    """One layer at one α, every other layer exact: its share of keys attended and the KL it causes.

    ``alpha=0`` is exact attention (all keys, no error); ``kl`` is the mean over the calibration
    steps of KL(full ‖ this) in nats.
    """

    layer: int
    alpha: float
    attended: float
    kl: float


@dataclass(frozen=True)
class Calibration:
    """The chosen α per layer (0: exact), with the predicted attended share and summed KL."""

    layer_alpha: Mapping[int, float]
    attended: float
    kl: float
    budget: float
    costs: tuple[LayerCost, ...]

    def config(self, base: SparseConfig | None = None) -> SparseConfig:
        """``base`` (default settings if none) with this calibration's per-layer α."""
        return dataclasses.replace(base or SparseConfig(), layer_alpha=dict(self.layer_alpha))


def _kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
    ref = torch.log_softmax(reference.float(), dim=-1)
    out = torch.log_softmax(logits.float(), dim=-1)
    return float((ref.exp() * (ref - out)).sum(-1).mean())


def _decode(model: Any, session: Session, tokens: Sequence[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    rows = []
    for token in tokens:
        out = forward(model, torch.tensor([[int(token)]], device=device), session)
        rows.append(out.logits[0, -1].float().cpu())
    return torch.stack(rows)


def measure_layer_costs(
    model: Any,
    texts: Sequence[Sequence[int]],
    *,
    steps: int = 32,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    config: SparseConfig | None = None,
) -> tuple[LayerCost, ...]:
    """Per layer and α: keys attended and KL against full attention, others exact; means over texts.

    Each text's last ``steps`` tokens are fed one decode step at a time after an exact prefill of
    the rest; ``config`` gives the window (``n_init``, ``n_last``), the scan is always flat (exact
    DIPR: what the graph index approximates).
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if not texts:
        raise ConfigError("calibration needs at least one text")
    if any(not 0.0 < a <= 1.0 for a in alphas) or not alphas:
        raise ConfigError(f"alphas must be in (0, 1], got {list(alphas)}")
    base_cfg = dataclasses.replace(config or SparseConfig(), mode="flat", max_queries=0)
    register()
    if getattr(model.config, "_attn_implementation", None) != ATTENTION_NAME:
        model.set_attn_implementation(ATTENTION_NAME)
    sums: dict[tuple[int, float], list[float]] = {}
    with torch.inference_mode():
        for t, ids in enumerate(texts):
            ids = [int(i) for i in ids]
            if len(ids) <= steps + 1:
                raise ConfigError(f"text {t} has {len(ids)} tokens, needs more than {steps + 1}")
            context, feed = ids[:-steps], ids[-steps:]
            base = Session(SparseConfig(mode="full", max_queries=0))
            device = next(model.parameters()).device
            forward(model, torch.tensor([context], device=device), base)
            kv = base.kv()
            exact = Session.from_kv(kv, SparseConfig(mode="full", max_queries=0))
            out = forward(model, torch.tensor([feed], device=device), exact)
            reference = out.logits[0].float().cpu()
            del exact
            layers = len(kv)
            for layer in range(layers):
                for alpha in alphas:
                    # α = 0 elsewhere: β = ∞, exact attention, so only this layer is sparse.
                    cfg = dataclasses.replace(
                        base_cfg, alpha=0.0, tau=None, layer_alpha={layer: alpha}
                    )
                    session = Session.from_kv(kv, cfg)
                    kl = _kl(reference, _decode(model, session, feed))
                    shares = [
                        s.attended_fraction
                        for step in session.stats
                        for s in step.layers
                        if s.layer == layer
                    ]
                    attended = sum(shares) / len(shares) if shares else 1.0
                    acc = sums.setdefault((layer, alpha), [0.0, 0.0])
                    acc[0] += attended
                    acc[1] += kl
                log.info("text %d layer %d/%d measured", t, layer + 1, layers)
    n = len(texts)
    return tuple(LayerCost(layer, alpha, a / n, k / n) for (layer, alpha), (a, k) in sums.items())


def allocate_alpha(costs: Sequence[LayerCost], budget: float) -> Calibration:
    """The α per layer with the least summed KL whose mean attended share is at most ``budget``.

    Every layer may also stay exact (α = 0: all keys, no error), so a generous budget leaves the
    most sensitive layers exact.
    """
    options: dict[int, list[LayerCost]] = {}
    for cost in costs:
        options.setdefault(cost.layer, []).append(cost)
    if not options:
        raise ConfigError("no layer costs to allocate from")
    for layer, opts in options.items():
        opts.append(LayerCost(layer, 0.0, 1.0, 0.0))
    layers = sorted(options)
    cheapest = sum(min(o.attended for o in options[layer]) for layer in layers) / len(layers)
    if budget < cheapest:
        raise ConfigError(
            f"budget {budget:.4f} is below the least the measured α attend ({cheapest:.4f}): "
            "measure looser α or widen the budget"
        )

    # A multiple-choice knapsack, solved exactly by dynamic programming over the budget in steps
    # of RESOLUTION of one layer's keys (each option's share rounded up, so the answer fits).
    weights = {
        layer: [math.ceil(o.attended / RESOLUTION - 1e-9) for o in options[layer]]
        for layer in layers
    }
    capacity = math.floor(budget * len(layers) / RESOLUTION + 1e-9)
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    picks = []
    for layer in layers:
        nxt = np.full(capacity + 1, np.inf)
        pick = np.zeros(capacity + 1, dtype=np.int16)
        for i, (o, w) in enumerate(zip(options[layer], weights[layer], strict=True)):
            if w > capacity:
                continue
            cand = np.full(capacity + 1, np.inf)
            cand[w:] = best[: capacity + 1 - w] + o.kl
            better = cand < nxt
            nxt[better] = cand[better]
            pick[better] = i
        best = nxt
        picks.append(pick)
    used = int(np.argmin(best))
    if not np.isfinite(best[used]):
        raise ConfigError(f"budget {budget:.4f} fits no choice of the measured α")
    choice: dict[int, LayerCost] = {}
    for layer, pick in zip(reversed(layers), reversed(picks), strict=True):
        o = options[layer][int(pick[used])]
        choice[layer] = o
        used -= weights[layer][int(pick[used])]
    return Calibration(
        layer_alpha=MappingProxyType({layer: choice[layer].alpha for layer in layers}),
        attended=sum(c.attended for c in choice.values()) / len(layers),
        kl=sum(c.kl for c in choice.values()),
        budget=budget,
        costs=tuple(costs),
    )


def calibrate_alpha(
    model: Any,
    texts: Sequence[Sequence[int]],
    *,
    budget: float,
    steps: int = 32,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    config: SparseConfig | None = None,
) -> Calibration:
    """Measure every layer's cost at each α on ``texts`` and allocate ``budget`` among layers.

    ``budget`` is the mean share of keys attended (window included) over layers, as
    ``StepStats.attended_fraction`` reports it. ``Calibration.config(config)`` is the result.
    """
    if not 0.0 < budget <= 1.0:
        raise ConfigError(f"budget must be in (0, 1], got {budget}")
    costs = measure_layer_costs(model, texts, steps=steps, alphas=alphas, config=config)
    return allocate_alpha(costs, budget)
