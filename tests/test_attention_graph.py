"""The graph index: recall of graph DIPR against the flat scan, filters, and the mode rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vectorstream.attention import KeyGraph, SparseConfig, beta_from_alpha, choose_mode, dipr


def _ood(seed: int, n: int, m: int, d: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered keys, and train/test queries from a distribution shifted away from the keys."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, d)) * 2.0
    keys = centres[rng.integers(0, 32, n)] + rng.normal(size=(n, d)) + rng.normal(size=d) * 2
    shift = rng.normal(size=d) * 2

    def queries(count: int) -> np.ndarray:
        return centres[rng.integers(0, 32, count)] * 0.7 + rng.normal(size=(count, d)) + shift

    return keys.astype(np.float32), queries(m).astype(np.float32), queries(60).astype(np.float32)


@pytest.fixture(scope="module")
def built() -> tuple[KeyGraph, np.ndarray, np.ndarray]:
    keys, train, test = _ood(0, 3000, 1500)
    return KeyGraph.build(keys, train), keys, test


def test_graph_dipr_recall_against_flat_dipr(
    built: tuple[KeyGraph, np.ndarray, np.ndarray],
) -> None:
    graph, keys, test = built
    beta = beta_from_alpha(0.05, keys.shape[1])
    recalls, precision, touched, sizes = [], [], [], []
    for q in test:
        exact = set(dipr(q, keys, beta).tolist())
        res = graph.search(keys, q, beta, capacity=128)
        found = set(res.indices.tolist())
        precision.append(len(found & exact) / max(1, len(found)))
        recalls.append(len(found & exact) / len(exact))
        touched.append(res.touched)
        sizes.append(len(exact))
    assert np.mean(recalls) >= 0.9
    assert np.mean(precision) >= 0.9
    # The point of the index: it scores far fewer keys than the flat scan.
    assert np.mean(touched) < 0.5 * len(keys)
    assert np.mean(sizes) < 0.2 * len(keys)


def test_every_key_is_reachable(built: tuple[KeyGraph, np.ndarray, np.ndarray]) -> None:
    graph, keys, test = built
    res = graph.search(keys, test[0], math.inf)
    assert res.indices.tolist() == list(range(len(keys)))
    assert res.touched == len(keys)


@pytest.mark.parametrize("limit", [1500, 2000, 2900])
def test_filtered_graph_search_stays_under_the_limit(
    built: tuple[KeyGraph, np.ndarray, np.ndarray], limit: int
) -> None:
    graph, keys, test = built
    beta = beta_from_alpha(0.05, keys.shape[1])
    recalls = []
    for q in test[:30]:
        res = graph.search(keys, q, beta, limit=limit)
        assert (res.indices < limit).all()
        exact = set(dipr(q, keys, beta, limit=limit).tolist())
        recalls.append(len(exact & set(res.indices.tolist())) / len(exact))
    assert np.mean(recalls) >= 0.85
    # With β = ∞ the two-hop expansion reaches (nearly) the whole prefix.
    reached = graph.search(keys, test[0], math.inf, limit=limit).indices
    assert reached.size >= 0.95 * limit


def test_graph_without_queries_and_seed_threshold() -> None:
    keys, _, test = _ood(1, 500, 0)
    graph = KeyGraph.build(keys)
    assert graph.neighbors.shape[0] == 500
    q = test[0]
    scores = keys @ q
    seed = float(scores.max()) + 1.0
    res = graph.search(keys, q, 3.0, seed_score=seed)
    assert set(res.indices.tolist()) <= set(np.flatnonzero(scores >= seed - 3.0).tolist())


def test_mode_rule() -> None:
    cfg = SparseConfig(full_below=512, graph_min=1024, flat_layers=(0,))
    assert choose_mode(3, 100, 0, cfg) == "full"
    assert choose_mode(0, 5000, 5000, cfg) == "flat"
    assert choose_mode(3, 5000, 500, cfg) == "flat"
    assert choose_mode(3, 5000, 5000, cfg) == "graph"
    assert choose_mode(0, 5000, 5000, SparseConfig(mode="graph")) == "graph"
    assert choose_mode(2, 5000, 0, SparseConfig(mode="graph")) == "flat"
    assert choose_mode(2, 10, 0, SparseConfig(mode="flat")) == "flat"
