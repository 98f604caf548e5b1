"""The compiled graph search against the numpy reference, the batched search, and the fallback.

The two searches score keys with different summation orders (numpy's BLAS against a compiled loop),
so on arbitrary floats a score may differ in its last bit and a key exactly at the threshold, or
two keys tied to the bit, may go either way. On keys and queries whose dot products are exact in
float32 (multiples of 1/4, small) every sum is exact in any order: there the searches must agree
exactly (positions, scores, keys touched), ties included, and ties are common.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vectorstream.attention import KeyGraph
from vectorstream.attention import _graph_jit as jit
from vectorstream.attention._graph import GraphSearchResult
from vectorstream.errors import ConfigError

needs_numba = pytest.mark.skipif(not jit.AVAILABLE, reason="numba is not installed")

BETAS = [0.0, 2.0, 10.0, 40.0, math.inf]
LIMITS = [None, 1, 2, 700, 1500, 1999]


def _data(seed: int, n: int, m: int, *, exact: bool, d: int = 64) -> tuple[np.ndarray, ...]:
    """Clustered keys, and build/test queries shifted away from them (out of distribution)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, d)) * 2.0
    keys = centres[rng.integers(0, 16, n)] + rng.normal(size=(n, d)) + rng.normal(size=d)
    shift = rng.normal(size=d)

    def queries(count: int) -> np.ndarray:
        return centres[rng.integers(0, 16, count)] * 0.7 + rng.normal(size=(count, d)) + shift

    out = (keys, queries(m), queries(12))
    if exact:  # multiples of 1/4 below 16: products and sums of 64 of them are exact in float32
        out = tuple(np.clip(np.round(a * 4) / 4, -15.75, 15.75) for a in out)
    return tuple(a.astype(np.float32) for a in out)


@pytest.fixture(scope="module")
def exact_graphs() -> tuple[list[KeyGraph], np.ndarray, np.ndarray]:
    keys, train, test = _data(0, 2000, 800, exact=True)
    return [KeyGraph.build(keys, train), KeyGraph.build(keys)], keys, test


def _same(a: GraphSearchResult, b: GraphSearchResult) -> None:
    assert a.touched == b.touched
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.indices.dtype == np.int64 and a.scores.dtype == np.float32


@needs_numba
@pytest.mark.parametrize("beta", BETAS)
def test_compiled_search_equals_numpy_exactly(
    exact_graphs: tuple[list[KeyGraph], np.ndarray, np.ndarray], beta: float
) -> None:
    graphs, keys, test = exact_graphs
    for graph in graphs:  # learned from queries, and from keys alone
        for limit in LIMITS:
            for i, q in enumerate(test):
                # Half the queries carry a seed (the window's best), one of them above every key.
                seed = [-math.inf, float((keys[:40] @ q).max()), 1e4][i % 3]
                for capacity in (0, 128) if i < 2 else (128,):
                    args = {"seed_score": seed, "capacity": capacity, "limit": limit}
                    _same(
                        graph.search(keys, q, beta, **args),
                        graph.search_numpy(keys, q, beta, **args),
                    )


@needs_numba
def test_compiled_search_with_wider_expansion_and_repeated_entries(
    exact_graphs: tuple[list[KeyGraph], np.ndarray, np.ndarray],
) -> None:
    graphs, keys, test = exact_graphs
    # A hand-made graph may list an entry twice: both searches score and count it twice.
    graph = KeyGraph(
        graphs[0].neighbors, np.concatenate([graphs[0].entries, graphs[0].entries[:3]])
    )
    for q in test[:4]:
        for expand in (1, 2, 7):
            for limit in (None, 1200):
                args = {"expand": expand, "limit": limit}
                _same(
                    graph.search(keys, q, 10.0, **args), graph.search_numpy(keys, q, 10.0, **args)
                )


@needs_numba
def test_compiled_search_on_float_keys_matches_numpy() -> None:
    # Arbitrary floats: scores agree to rounding; positions and keys touched agree unless a key
    # sits within a rounding error of the threshold (none does here, for β > 0).
    keys, train, test = _data(1, 2000, 800, exact=False)
    graph = KeyGraph.build(keys, train)
    for beta in (2.0, 10.0, math.inf):
        for limit in (None, 1500):
            for q in test:
                a = graph.search(keys, q, beta, limit=limit)
                b = graph.search_numpy(keys, q, beta, limit=limit)
                assert a.touched == b.touched
                np.testing.assert_array_equal(a.indices, b.indices)
                np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-4)


@needs_numba
@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_graphs(n: int) -> None:
    keys, train, test = _data(2, n, 5, exact=True)
    for graph in (KeyGraph.build(keys, train), KeyGraph.build(keys)):
        for beta in (0.0, 5.0, math.inf):
            for limit in (None, 0, 1, 2, 5):
                for q in test[:3]:
                    a = graph.search(keys, q, beta, limit=limit)
                    _same(a, graph.search_numpy(keys, q, beta, limit=limit))
                    if math.isinf(beta):
                        upper = n if limit is None else min(limit, n)
                        assert a.indices.tolist() == list(range(upper))


@needs_numba
def test_search_many_equals_one_search_per_query(
    exact_graphs: tuple[list[KeyGraph], np.ndarray, np.ndarray],
) -> None:
    graphs, keys, test = exact_graphs
    graph = graphs[0]
    seeds = np.array(
        [float((keys[:40] @ q).max()) if i % 2 else -math.inf for i, q in enumerate(test)]
    )
    for beta in (0.0, 10.0, math.inf):
        for limit in (None, 1500, 0):
            many = graph.search_many(keys, test, beta, seed_scores=seeds, limit=limit)
            assert len(many) == len(test)
            for q, seed, res in zip(test, seeds, many, strict=True):
                _same(res, graph.search(keys, q, beta, seed_score=float(seed), limit=limit))
                _same(res, graph.search_numpy(keys, q, beta, seed_score=float(seed), limit=limit))
    # Seeds default to −∞; a single query may come as a vector.
    _same(graph.search_many(keys, test[:1], 10.0)[0], graph.search_numpy(keys, test[0], 10.0))
    _same(graph.search_many(keys, test[0], 10.0)[0], graph.search_numpy(keys, test[0], 10.0))


def test_numpy_fallback(
    exact_graphs: tuple[list[KeyGraph], np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs, keys, test = exact_graphs
    graph = graphs[0]
    expected = [graph.search_numpy(keys, q, 10.0, limit=1500) for q in test[:3]]

    def refuse(*args: object) -> None:
        raise AssertionError("the compiled search ran")

    monkeypatch.setattr(jit, "search_many", refuse)
    # float64 keys are not what the kernel is built for: the numpy reference serves them.
    for q, want in zip(test[:3], expected, strict=True):
        res = graph.search(keys.astype(np.float64), q, 10.0, limit=1500)
        np.testing.assert_array_equal(res.indices, want.indices)
    # Without numba every search is the numpy one.
    monkeypatch.setattr(jit, "AVAILABLE", False)
    many = graph.search_many(keys, test[:3], 10.0, limit=1500)
    for q, want, res in zip(test[:3], expected, many, strict=True):
        _same(res, want)
        _same(graph.search(keys, q, 10.0, limit=1500), want)


def test_the_kernel_as_plain_python_equals_numpy() -> None:
    # The kernel's source read as Python (what runs under numba's compiler, minus the compiling).
    kernel = getattr(jit._search_many, "py_func", jit._search_many)
    keys, train, test = _data(3, 60, 30, exact=True)
    graph = KeyGraph.build(keys, train, degree=6, slack=2, entry_count=4)
    for beta, limit in [(4.0, 60), (math.inf, 60), (6.0, 35)]:
        start = graph._start(limit)
        seeds = np.full(3, -math.inf)
        out = kernel(keys, graph.neighbors, start, test[:3], seeds, beta, 8, limit, 2, True)
        ids, scores, offsets, touched = out
        for j in range(3):
            want = graph.search_numpy(keys, test[j], beta, capacity=8, limit=limit)
            got = GraphSearchResult(
                ids[offsets[j] : offsets[j + 1]], scores[offsets[j] : offsets[j + 1]], touched[j]
            )
            _same(got, want)


def test_without_numba_installed_the_graph_searches_in_numpy() -> None:
    code = (
        "import logging, sys\n"
        "sys.modules['numba'] = None\n"  # import numba now raises ImportError
        "logging.basicConfig(level=logging.DEBUG, format='%(name)s: %(message)s')\n"
        "import numpy as np\n"
        "from vectorstream.attention import KeyGraph, _graph_jit\n"
        "keys = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)\n"
        "graph = KeyGraph.build(keys, keys[:50])\n"
        "a = graph.search(keys, keys[7], 4.0)\n"
        "b = graph.search_numpy(keys, keys[7], 4.0)\n"
        "assert not _graph_jit.AVAILABLE\n"
        "assert a.indices.tolist() == b.indices.tolist() and a.touched == b.touched\n"
        "print('ok', a.touched)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok")
    assert "vectorstream.attention.compiled: numba is not installed" in run.stderr


def test_bad_graphs_and_arguments_are_refused(
    exact_graphs: tuple[list[KeyGraph], np.ndarray, np.ndarray],
) -> None:
    graphs, keys, test = exact_graphs
    graph = graphs[0]
    nbr = graph.neighbors.copy()
    nbr[3, 0] = len(nbr)  # past the last key: the compiled search would read out of bounds
    with pytest.raises(ConfigError, match="neighbors"):
        KeyGraph(nbr, graph.entries)
    with pytest.raises(ConfigError, match="entries"):
        KeyGraph(graph.neighbors, np.array([-1], dtype=np.int32))
    with pytest.raises(ConfigError, match="expand"):
        graph.search(keys, test[0], 1.0, expand=0)
    with pytest.raises(ConfigError, match="capacity"):
        graph.search_many(keys, test, 1.0, capacity=-1)
    with pytest.raises(ConfigError, match="seed_scores"):
        graph.search_many(keys, test, 1.0, seed_scores=[0.0])
    if jit.AVAILABLE:
        with pytest.raises(ConfigError, match="keys"):
            graph.search(keys[:100], test[0], 1.0)  # fewer keys than the graph indexes
        # A filter that leaves only the keys given is fine.
        assert (graph.search(keys[:100], test[0], math.inf, limit=100).indices < 100).all()
    # Graphs are stored as int32, whatever they were built or loaded as.
    wide = KeyGraph(graph.neighbors.astype(np.int64), graph.entries.astype(np.int64))
    assert wide.neighbors.dtype == np.int32 and wide.entries.dtype == np.int32


def test_speed_benchmark_runs_at_toy_size(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "attention" / "graph_speed.py"
    spec = importlib.util.spec_from_file_location("attention_graph_speed", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = {"build_queries": 100, "queries": 6, "group": 3, "alpha": 1e-2, "repeat": 1}
    row = bench.measure(700, cache=tmp_path, **args)
    assert row["agree"] == 1.0 and 0.0 < row["touched"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
    assert all(row[k] > 0 for k in ("numpy_us", "compiled_us", "many_us", "flat_us"))
    again = bench.measure(700, cache=tmp_path, **args)  # the graph comes from the cache
    assert again["build_s"] is None and again["touched"] == row["touched"]
    assert "many_us" in bench.C.format_table([row, again], bench.COLUMNS)
