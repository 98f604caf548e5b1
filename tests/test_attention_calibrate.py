"""Per-layer α: the config field, the budget allocation, and calibration on a tiny random model."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from _attention_support import random_ids, tiny_model
from vectorstream.attention import (
    LayerCost,
    Session,
    SparseConfig,
    allocate_alpha,
    calibrate_alpha,
    measure_layer_costs,
)
from vectorstream.errors import ConfigError


def test_layer_alpha_overrides_alpha_only_for_its_layers() -> None:
    cfg = SparseConfig(alpha=1e-3, layer_alpha={2: 1e-2, 3: 0.0})
    assert cfg.beta(64, 0.125, 0) == SparseConfig(alpha=1e-3).beta(64, 0.125)
    assert cfg.beta(64, 0.125, 2) == SparseConfig(alpha=1e-2).beta(64, 0.125)
    assert cfg.beta(64, 0.125, 3) == float("inf")
    assert cfg.beta(64, 0.125) == cfg.beta(64, 0.125, 0)


def test_layer_alpha_is_validated_and_copied() -> None:
    source = {1: 1e-3}
    cfg = SparseConfig(layer_alpha=source)
    source[1] = 0.5  # the caller's dict changing later must not change the frozen config
    assert cfg.layer_alpha[1] == 1e-3
    assert cfg == SparseConfig(layer_alpha={1: 1e-3})
    assert hash(cfg) == hash(SparseConfig(layer_alpha={1: 1e-3}))
    with pytest.raises(TypeError):
        cfg.layer_alpha[1] = 0.1  # type: ignore[index]
    with pytest.raises(ConfigError):
        SparseConfig(layer_alpha={0: 2.0})
    with pytest.raises(ConfigError):
        SparseConfig(layer_alpha={-1: 1e-3})


def test_a_session_uses_each_layers_alpha() -> None:
    model = tiny_model("llama")
    for sparse_layer in (0, 1):
        cfg = SparseConfig(
            alpha=0.0, layer_alpha={sparse_layer: 0.95}, full_below=0, n_init=2, n_last=8
        )
        session = Session(cfg)
        with torch.inference_mode():
            out = model(random_ids(200), past_key_values=session)
            for _ in range(3):
                out = model(out.logits[:, -1:].argmax(-1), past_key_values=session)
        for step in session.stats:
            shares = [layer.attended_fraction for layer in step.layers]
            # α = 0 attends every key; α = 0.95 only keys near the maximum (a random model's
            # attention is flat, so that is still most of them, but never all).
            assert shares[1 - sparse_layer] == pytest.approx(1.0)
            assert shares[sparse_layer] < 0.97


def _costs(table: dict[int, list[tuple[float, float, float]]]) -> list[LayerCost]:
    return [LayerCost(layer, a, att, kl) for layer, rows in table.items() for a, att, kl in rows]


TABLE = {
    0: [(1e-2, 0.30, 0.020), (1e-3, 0.50, 0.004)],
    1: [(1e-2, 0.06, 0.010), (1e-3, 0.08, 0.001)],
    2: [(1e-2, 0.07, 0.0005), (1e-3, 0.10, 0.0001)],
}


def _brute_force(budget: float) -> float:
    options = {layer: [*rows, (0.0, 1.0, 0.0)] for layer, rows in TABLE.items()}
    best = float("inf")
    for combo in itertools.product(*options.values()):
        if sum(o[1] for o in combo) / len(combo) <= budget + 1e-12:
            best = min(best, sum(o[2] for o in combo))
    return best


@pytest.mark.parametrize("budget", [0.15, 0.2, 0.22, 0.3, 0.4, 0.7, 1.0])
def test_allocation_fits_the_budget_with_the_least_kl(budget: float) -> None:
    cal = allocate_alpha(_costs(TABLE), budget)
    assert cal.attended <= budget + 1e-12
    assert set(cal.layer_alpha) == {0, 1, 2}
    # On this table the sweep and the greedy fill find the true optimum.
    assert cal.kl == pytest.approx(_brute_force(budget))
    chosen = {c.layer: c for c in cal.costs if cal.layer_alpha[c.layer] == c.alpha}
    assert cal.kl == pytest.approx(
        sum(chosen[layer].kl for layer in chosen if cal.layer_alpha[layer])
    )


def test_allocation_spends_a_generous_budget_on_exactness() -> None:
    cal = allocate_alpha(_costs(TABLE), 1.0)
    assert dict(cal.layer_alpha) == {0: 0.0, 1: 0.0, 2: 0.0}
    assert cal.kl == 0.0


def test_allocation_refuses_a_budget_below_the_loosest_alpha() -> None:
    with pytest.raises(ConfigError, match="below the least"):
        allocate_alpha(_costs(TABLE), 0.1)


def _sharp_model() -> torch.nn.Module:
    """A tiny random model whose attention is peaked, as a trained model's is (random init is flat)."""
    model = tiny_model("qwen2")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40.0)
    return model


def test_calibration_on_a_tiny_model() -> None:
    model = _sharp_model()
    texts = [random_ids(240, seed=s)[0].tolist() for s in (3, 4)]
    window = SparseConfig(n_init=2, n_last=16, full_below=0)
    costs = measure_layer_costs(model, texts, steps=6, alphas=(0.5, 1e-2, 1e-30), config=window)
    assert {(c.layer, c.alpha) for c in costs} == {
        (layer, a) for layer in (0, 1) for a in (0.5, 1e-2, 1e-30)
    }
    for layer in (0, 1):
        by_alpha = {c.alpha: c for c in costs if c.layer == layer}
        # A looser α keeps fewer keys; α → 0 keeps all of them and changes nothing.
        assert by_alpha[0.5].attended < by_alpha[1e-2].attended <= by_alpha[1e-30].attended
        assert by_alpha[1e-30].attended == pytest.approx(1.0)
        assert by_alpha[1e-30].kl == pytest.approx(0.0, abs=1e-7)
        assert by_alpha[0.5].kl > by_alpha[1e-30].kl
    budget = (by_alpha[0.5].attended + 1.0) / 2  # room for one layer exact, not both
    cal = calibrate_alpha(model, texts, budget=budget, steps=6, alphas=(0.5, 1e-2), config=window)
    assert cal.attended <= budget
    cfg = cal.config(window)
    assert (cfg.n_init, cfg.n_last) == (2, 16)
    assert dict(cfg.layer_alpha) == dict(cal.layer_alpha)
    # Decoding with the result attends what the calibration predicted (same text, same steps).
    session = Session(dataclasses.replace(cfg, mode="flat"))
    with torch.inference_mode():
        model(torch.tensor([texts[0][:-6]]), past_key_values=session)
        for token in texts[0][-6:]:
            model(torch.tensor([[token]]), past_key_values=session)
    attended = sum(s.attended_fraction for s in session.stats) / len(session.stats)
    assert attended == pytest.approx(cal.attended, abs=0.1)


def test_calibration_accepts_a_window_config_given_by_tau() -> None:
    # The base config may set tau; calibration overrides it per layer rather than clashing with it.
    model = _sharp_model()
    texts = [random_ids(120, seed=5)[0].tolist()]
    window = SparseConfig(tau=2.0, n_init=2, n_last=16, full_below=0)
    costs = measure_layer_costs(model, texts, steps=2, alphas=(0.5,), config=window)
    assert {c.layer for c in costs} == {0, 1}
