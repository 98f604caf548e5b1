"""Exactness of the DIPR rule, its parameters, the window split and the log-sum-exp merge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vectorstream.attention as attention
from vectorstream.attention import (
    beta_from_alpha,
    beta_from_tau,
    dipr,
    merge_partials,
    partial_attention,
    window_positions,
)
from vectorstream.errors import ConfigError


def _qk(seed: int, n: int = 500, d: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=d).astype(np.float32), (rng.normal(size=(n, d)) * 2).astype(np.float32)


def test_public_names_equal_all() -> None:
    public = {n for n in dir(attention) if not n.startswith("_")}
    assert sorted(attention.__all__) == attention.__all__
    assert set(attention.__all__) <= public
    for name in attention.__all__:
        assert getattr(attention, name) is not None


@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.01, 1e-4])
def test_beta_from_alpha_keeps_weights_at_least_alpha_times_the_max(alpha: float) -> None:
    q, k = _qk(1)
    d = q.shape[0]
    weights = torch.softmax(torch.from_numpy(k @ q) / math.sqrt(d), dim=0).numpy()
    expected = np.flatnonzero(weights >= alpha * weights.max() * (1 - 1e-5))
    got = dipr(q, k, beta_from_alpha(alpha, d))
    assert set(got.tolist()) == set(expected.tolist())
    assert beta_from_alpha(alpha, d) == pytest.approx(-math.sqrt(d) * math.log(alpha))


def test_beta_parameters() -> None:
    assert beta_from_alpha(0.0, 64) == math.inf
    assert beta_from_alpha(1.0, 64) == 0.0
    assert beta_from_tau(2.0, 64) == pytest.approx(16.0)
    # A non-standard softmax scaling changes β: the weight ratio is exp(s·Δ).
    assert beta_from_alpha(0.1, 64, scaling=0.5) == pytest.approx(-math.log(0.1) / 0.5)
    for bad in (lambda: beta_from_alpha(1.5, 64), lambda: beta_from_tau(-1, 64)):
        with pytest.raises(ConfigError):
            bad()


def test_flat_dipr_equals_brute_force_and_seed_raises_the_threshold() -> None:
    q, k = _qk(2)
    scores = k @ q
    beta = 10.0
    brute = [i for i, s in enumerate(scores) if s >= scores.max() - beta]
    assert dipr(q, k, beta).tolist() == brute
    assert dipr(q, k, math.inf).tolist() == list(range(len(k)))
    # β = 0 returns the best key only.
    assert dipr(q, k, 0.0).tolist() == [int(scores.argmax())]
    # A seed above every key (the exact window's maximum) leaves only keys within β of it.
    seed = float(scores.max()) + 5.0
    assert dipr(q, k, beta, seed=seed).tolist() == [
        i for i, s in enumerate(scores) if s >= seed - beta
    ]


@pytest.mark.parametrize("limit", [1, 37, 250, 499])
def test_filtered_dipr_equals_dipr_over_the_prefix(limit: int) -> None:
    q, k = _qk(3)
    for beta in (0.0, 5.0, 20.0):
        assert dipr(q, k, beta, limit=limit).tolist() == dipr(q, k[:limit], beta).tolist()


def test_window_positions_split_the_sequence() -> None:
    for n, n_init, n_last in [(100, 4, 16), (10, 4, 16), (20, 4, 16), (0, 4, 4), (50, 0, 1)]:
        window, middle = window_positions(n, n_init, n_last)
        assert sorted(np.concatenate([window, middle]).tolist()) == list(range(n))
        assert not set(window.tolist()) & set(middle.tolist())
        assert set(range(min(n_init, n))) <= set(window.tolist())
        assert set(range(max(0, n - n_last), n)) <= set(window.tolist())


@pytest.mark.parametrize("seed", range(4))
def test_log_sum_exp_merge_of_disjoint_parts_equals_softmax_over_the_union(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    heads, n, d = 3, 200, 32
    q = torch.randn(heads, d, generator=gen)
    k = torch.randn(heads, n, d, generator=gen) * 3
    v = torch.randn(heads, n, d, generator=gen)
    scaling = d**-0.5
    reference = torch.einsum(
        "hn,hnd->hd", torch.softmax(torch.einsum("hd,hnd->hn", q, k) * scaling, -1), v
    )
    labels = torch.randint(0, 3, (n,), generator=gen)
    parts = []
    for p in range(4):  # part 3 is empty: it must not disturb the merge
        idx = torch.nonzero(labels == p).reshape(-1)
        parts.append(partial_attention(q, k[:, idx], v[:, idx], scaling))
    assert torch.isinf(parts[3][1]).all()
    merged = merge_partials(parts)
    assert torch.allclose(merged, reference, atol=1e-5)


def test_masked_partial_attention_ignores_masked_keys() -> None:
    gen = torch.Generator().manual_seed(9)
    q, k, v = (
        torch.randn(2, 8, generator=gen),
        torch.randn(2, 10, 8, generator=gen),
        torch.randn(2, 10, 8, generator=gen),
    )
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :6] = True
    out, lse = partial_attention(q, k, v, 0.5, mask)
    out6, lse6 = partial_attention(q, k[:, :6], v[:, :6], 0.5)
    assert torch.allclose(out, out6, atol=1e-6)
    assert torch.allclose(lse, lse6, atol=1e-6)


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vectorstream, vectorstream.attention as a; "
        "assert a.dipr is not None; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
