"""The rules that live in one place: vector validation, the DIPR cut, adapter options.

Every caller (stores, the retrying writer, search, the server, attention) goes through these, so
these tests pin their one meaning; the store contract (``check_contract``) checks each adapter
answers through them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pytest

from _servers_support import make_records
from vectorstream import _dipr
from vectorstream._vectors import (
    check_query,
    dense_problem,
    embedding_problem,
    embedding_problems,
)
from vectorstream.errors import ConfigError
from vectorstream.stores._common import (
    AdapterOptions,
    adaptive_range,
    check_range,
    server_address,
    side_key_id,
    side_name,
)
from vectorstream.stores.base import StoreCapabilities, dipr_cut
from vectorstream.stores.retry import write_with_retry
from vectorstream.types import Embedding, Hit, Record, SparseVector

# -- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "dim", "message"),
    [
        (np.ones((1, 4)), 4, "1-D"),
        (np.ones(3), 4, "dimension 3; the store holds 4-dimensional"),
        (np.array([1.0, np.nan, 0, 0]), 4, "NaN"),
        (np.array([1.0, np.inf, 0, 0]), None, "NaN or infinity"),
        (np.array([True, False, True, True]), 4, "numeric"),
        (np.array(["1", "2", "3", "4"]), 4, "numeric"),
        (np.array([1.0, None, 0, 0], dtype=object), 4, "numeric"),
    ],
)
def test_a_bad_query_is_a_config_error_saying_why(vector, dim, message) -> None:
    with pytest.raises(ConfigError, match=message):
        check_query(vector, dim)
    assert message in (dense_problem(vector, dim) or "")


def test_a_good_query_comes_back_as_float32() -> None:
    q = check_query([1, 2, 3], 3)
    assert q.dtype == np.float32 and q.tolist() == [1.0, 2.0, 3.0]
    assert check_query(np.ones(5, dtype=np.float64), None).dtype == np.float32


def _sparse(indices: Sequence[int], values: Sequence[float], dim: int = 10) -> Embedding:
    return Embedding(sparse=SparseVector(np.array(indices), np.array(values), dim))


@pytest.mark.parametrize(
    ("embedding", "dim", "message"),
    [
        (Embedding(dense=np.ones(4, np.float32)), 4, None),
        (Embedding(dense=np.ones(4, np.float32)), 5, "dimension 4; the store holds 5-dimensional"),
        (_sparse([1, 4, 7], [0.5, 1.0, 2.0]), 10, None),
        (_sparse([], []), 10, None),
        (_sparse([1, 4], [0.5, 1.0]), 30_522, "vocabulary of 10 terms; the store holds 30522"),
        (_sparse([4, 1], [0.5, 1.0]), None, "sorted and unique"),
        (_sparse([1, 1], [0.5, 1.0]), None, "sorted and unique"),
        (_sparse([1, 10], [0.5, 1.0]), None, r"outside \[0, 10\)"),
        (_sparse([-1, 3], [0.5, 1.0]), None, "outside"),
        (_sparse([1, 3], [0.5, np.nan]), None, "NaN"),
        (Embedding(multivector=np.ones((3, 8), np.float32)), 8, None),
        (Embedding(multivector=np.ones((3, 8), np.float32)), 4, "rows have dimension 8"),
        (Embedding(multivector=np.ones((0, 8), np.float32)), 8, "at least one row"),
        (Embedding(multivector=np.full((2, 8), np.inf, np.float32)), 8, "NaN or infinity"),
    ],
)
def test_record_embeddings_are_checked_by_kind(embedding, dim, message) -> None:
    problem = embedding_problem(embedding, dim)
    if message is None:
        assert problem is None
    else:
        assert problem is not None
        assert re.search(message, problem), problem


def test_the_batch_check_agrees_with_the_one_by_one_check() -> None:
    rng = np.random.default_rng(0)
    embeddings = []
    for i in range(200):
        v = rng.standard_normal(8 if i % 17 else 9).astype(np.float32)
        if i % 7 == 0:
            v[i % 8] = np.nan
        if i % 11 == 0:
            v[0] = np.inf
        embeddings.append(Embedding(dense=v) if i % 23 else _sparse([i % 10], [1.0]))
    for dim in (8, None):
        expected = [embedding_problem(e, dim) for e in embeddings]
        assert embedding_problems(embeddings, dim) == expected


# -- DIPR --------------------------------------------------------------------------------------


def test_one_rule_on_floats_arrays_and_tensors() -> None:
    assert _dipr.within(0.7, 1.0, 0.3) and not _dipr.within(0.69, 1.0, 0.3)
    scores = np.array([1.0, 0.8, 0.5], dtype=np.float32)
    assert _dipr.within(scores, scores.max(), 0.25).tolist() == [True, True, False]
    assert _dipr.within(scores, scores.max(), math.inf).all()
    torch = pytest.importorskip("torch")
    t = torch.tensor([[1.0, 0.8, 0.5], [0.1, 0.2, 0.3]])
    got = _dipr.within(t, t.amax(-1, keepdim=True), 0.25)
    assert got.tolist() == [[True, True, False], [True, True, True]]
    assert _dipr.threshold(t.amax(-1), math.inf).isinf().all()


@pytest.mark.parametrize("beta", [float("nan"), -0.1, "0.5", None, True])
def test_a_bad_beta_is_refused_everywhere(beta) -> None:
    from vectorstream.attention import dipr

    with pytest.raises(ConfigError, match="beta"):
        _dipr.check_beta(beta)
    with pytest.raises(ConfigError, match="beta"):
        dipr_cut([Hit("a", 1.0, "", "")], beta)
    with pytest.raises(ConfigError, match="beta"):
        check_range(beta, 10)
    with pytest.raises(ConfigError, match="beta"):
        dipr(np.ones(4), np.ones((3, 4)), beta)


def test_alpha_to_beta_lives_once() -> None:
    from vectorstream.attention import beta_from_alpha
    from vectorstream.search import DEFAULT_TEMPERATURE, alpha_to_beta

    assert alpha_to_beta is _dipr.alpha_to_beta and DEFAULT_TEMPERATURE == 0.05
    assert beta_from_alpha(0.1, 64) == pytest.approx(_dipr.alpha_to_beta(0.1, 8.0))
    assert beta_from_alpha(0.0, 64) == math.inf  # attention's "every key"
    assert str(_dipr.alpha_to_beta(1.0)) == "0.0"
    for bad in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="alpha"):
            _dipr.alpha_to_beta(bad)


def test_dipr_cut_and_the_widening_range_keep_the_same_hits() -> None:
    scores = [1.0 - 0.01 * i for i in range(300)]
    hits = [Hit(f"h{i}", s, "", "") for i, s in enumerate(scores)]
    cut = dipr_cut(hits[::-1], 0.5)
    assert [h.id for h in cut] == [f"h{i}" for i in range(51)]
    asked: list[int] = []

    def search(k: int) -> list[Hit]:
        asked.append(k)
        return hits[:k]

    assert adaptive_range(search, 0.5, 1000) == cut and asked == [32, 128]
    assert dipr_cut([], 0.5) == []


# -- the retrying writer reads embeddings by kind ---------------------------------------------


class _KindStore:
    uri = "fake://"
    collection = "c"

    def __init__(self, kinds: frozenset[str], **dims: int) -> None:
        self.capabilities = StoreCapabilities(kinds=kinds)  # type: ignore[arg-type]
        for name, value in dims.items():
            setattr(self, name, value)
        self.rows: dict[str, Record] = {}

    def upsert(self, records: Sequence[Record]) -> None:
        self.rows.update((r.id, r) for r in records)


def _with(record: Record, rid: str, embedding: Embedding) -> Record:
    fields = {f: getattr(record, f) for f in Record.__dataclass_fields__}
    return Record(**{**fields, "id": rid, "embedding": embedding})


def test_the_writer_checks_each_kind_and_refuses_kinds_the_store_lacks() -> None:
    base = make_records(1, dim=4)[0]
    sparse_ok = _with(base, "s-ok", _sparse([1, 2], [0.5, 0.5], 10))
    sparse_bad = _with(base, "s-bad", _sparse([2, 1], [0.5, 0.5], 10))
    multi_ok = _with(base, "m-ok", Embedding(multivector=np.ones((3, 4), np.float32)))
    multi_bad = _with(base, "m-bad", Embedding(multivector=np.ones((3, 5), np.float32)))
    dense = _with(base, "d", Embedding(dense=np.ones(4, np.float32)))

    seen: dict[str, str] = {}
    store = _KindStore(frozenset({"dense"}), dim=4)
    result = write_with_retry(
        store,  # type: ignore[arg-type]
        [dense, sparse_ok, multi_ok],
        on_rejected=lambda r, why: seen.__setitem__(r.id, why),
    )
    assert set(store.rows) == {"d"} and result.written == 1
    assert "holds dense embeddings, not sparse" in seen["s-ok"]
    assert "not multivector" in seen["m-ok"]

    seen.clear()
    mixed = _KindStore(frozenset({"sparse", "multivector"}), sparse_dim=10, multivector_dim=4)
    write_with_retry(
        mixed,  # type: ignore[arg-type]
        [sparse_ok, sparse_bad, multi_ok, multi_bad],
        on_rejected=lambda r, why: seen.__setitem__(r.id, why),
    )
    assert set(mixed.rows) == {"s-ok", "m-ok"}
    assert (
        "sorted and unique" in seen["s-bad"]
        and "dimension 5; the store holds 4-dimensional" in seen["m-bad"]
    )


# -- adapter options ---------------------------------------------------------------------------


def test_adapter_options_name_what_they_take() -> None:
    opts = AdapterOptions("Weaviate", {"mode": "r", "https": True, "colour": "red"})
    assert opts.mode == "r" and opts.take("https") is True and opts.number("timeout", 30) == 30.0
    with pytest.raises(ConfigError, match=r"unknown Weaviate options: \['colour'\].*'https'"):
        opts.finish()
    with pytest.raises(ConfigError, match="mode"):
        AdapterOptions("X", {"mode": "rw"})
    for bad in ("soon", -1, 0):
        with pytest.raises(ConfigError, match="timeout"):
            AdapterOptions("X", {"timeout": bad}).number("timeout", 30.0)
    assert server_address("es://[::1]:9201", "Elasticsearch", 9200) == ("::1", 9201)
    assert server_address("weaviate://host", "Weaviate", 8080) == ("host", 8080)
    with pytest.raises(ConfigError, match="weaviate://HOST:PORT"):
        server_address("weaviate:host", "Weaviate", 8080)


def test_side_keys_and_names() -> None:
    assert side_key_id("/a/b.txt") == "/a/b.txt"
    long_key = "é" * 300  # 600 bytes
    hashed = side_key_id(long_key)
    assert hashed.startswith("~") and len(hashed) == 65 and hashed == side_key_id(long_key)
    assert side_key_id("~x") != "~x"  # no literal key can look like a hashed one
    assert side_key_id("é", ascii_only=True).isascii()
    assert side_name("manifest") == "manifest"
    for bad in ("Manifest", "a-b", "", "_x", "x" * 49):
        with pytest.raises(ConfigError):
            side_name(bad)
