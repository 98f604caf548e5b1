"""Sparse collections in the Elasticsearch and OpenSearch adapters, at the HTTP seam (no server
runs on this machine).

The tests run against the stateful fake engine (``_vendor_fakes.FakeSearchEngine``), which keeps
feature weights with 9 significant bits as both engines do (Lucene's ``FeatureField``) and scores
the sparse queries over those; the adapter's searches are checked against dot products computed
in numpy, its requests (mappings, documents, queries) against what the engines document.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest

from _servers_support import (
    FakeServer,
    check_kind_contract,
    check_side_table,
    kind_embedding,
    make_kind_records,
    make_records,
    row_of,
)
from _vendor_fakes import FakeSearchEngine, feature_weight
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError
from vectorstream.stores import open_store
from vectorstream.stores.base import matches, require_kind
from vectorstream.stores.elasticsearch import ElasticsearchStore, OpenSearchStore
from vectorstream.types import Embedding, Record, SparseVector

VOCAB = 300
FLAVORS = ["elasticsearch", "opensearch"]
SPARSE_TYPE = {"elasticsearch": "sparse_vector", "opensearch": "rank_features"}


def open_sparse(engine: FakeSearchEngine, **kw: Any):
    kw = {"dim": VOCAB, "kind": "sparse", **kw}
    return open_store(
        f"{engine.flavor}://es.test:9200", "docs", transport=httpx.MockTransport(engine), **kw
    )


def open_mapped(flavor: str, mappings: dict[str, Any], dim: int | None = None):
    """A store on an index whose mapping answers ``mappings`` (made elsewhere, say by hand)."""
    server = FakeServer({("GET", "/docs/_mapping"): {"docs": {"mappings": mappings}}})
    transport = httpx.MockTransport(server)
    return open_store(f"{flavor}://es.test:9200", "docs", dim=dim, transport=transport)


def sparse_record(rid: str, indices: list[int], values: list[float], **fields: Any) -> Record:
    base = make_records(1, dim=4)[0]
    emb = Embedding(sparse=SparseVector(indices, np.asarray(values, dtype=np.float32), VOCAB))
    return replace(base, id=rid, embedding=emb, **fields)


def searches(engine: FakeSearchEngine) -> list[dict[str, Any]]:
    return [b for m, p, b, _ in engine.requests if (m, p) == ("POST", "/docs/_search")]


def numpy_scores(query: SparseVector, records: list[Record], weight=float) -> dict[str, float]:
    """Dot products of ``query`` with every record, in numpy over dense rows (positive only).
    ``weight`` maps each stored weight (to what an engine keeps of it, say)."""
    q = np.zeros(VOCAB)
    q[query.indices] = query.values
    out = {}
    for r in records:
        sv = r.embedding.sparse
        assert sv is not None
        d = np.zeros(VOCAB)
        d[sv.indices] = [weight(float(v)) for v in sv.values]
        if (score := float(q @ d)) > 0:
            out[r.id] = score
    return out


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_sparse_index_maps_its_field_and_notes_its_kind(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    assert store.kind == "sparse" and store.dim == VOCAB
    assert store.capabilities.kinds == {"dense", "sparse"}
    body = engine.indices["docs"]["body"]
    props = body["mappings"]["properties"]
    assert props["embedding"] == {"type": SPARSE_TYPE[flavor]}
    assert props["embedding_weights"] == {"type": "object", "enabled": False}
    assert body["mappings"]["_meta"] == {"vectorstream.kind": "sparse", "vectorstream.dim": VOCAB}
    assert "settings" not in body  # no k-NN field, so OpenSearch needs no index.knn
    assert props["source"] == {"type": "keyword"} and props["section_index"]["type"] == "integer"
    # A dense index notes its kind too.
    dense = FakeSearchEngine(flavor)
    open_store(f"{flavor}://es.test:9200", "docs", dim=8, transport=httpx.MockTransport(dense))
    meta = dense.indices["docs"]["body"]["mappings"]["_meta"]
    assert meta == {"vectorstream.kind": "dense", "vectorstream.dim": 8}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sparse_upserts_send_token_ids_as_features_without_zeros(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    tenth = float(np.float32(0.1))
    good = sparse_record("good", [3, 7, 42, 250, 299], [0.1, 0.0, 1.25, 1e-40, 2.0])
    negative = sparse_record("negative", [1, 2], [0.5, -0.25])
    outside = sparse_record("outside", [1, 300], [0.5, 0.5])  # beyond the vocabulary
    dense = replace(make_records(1, dim=4)[0], id="dense")
    with pytest.raises(RecordRejectedError) as info:
        store.upsert([good, negative, outside, dense])
    assert set(info.value.rejected) == {"negative", "outside", "dense"}
    assert "negative weights" in info.value.rejected["negative"]
    assert "outside" in info.value.rejected["outside"]
    assert "holds sparse embeddings, not dense" in info.value.rejected["dense"]
    (lines,) = [b for m, p, b, _ in engine.requests if p == "/_bulk"]
    assert [a["index"]["_id"] for a in lines[0::2]] == ["good"]  # the others never sent
    doc = lines[1]
    # Token ids as feature names; the zero and the subnormal weight (which no engine holds)
    # are left out; the weights are the float32 values exactly.
    assert doc["embedding"] == {"3": tenth, "42": 1.25, "299": 2.0}
    assert doc["embedding_weights"] == {"indices": [3, 42, 299], "values": [tenth, 1.25, 2.0]}
    assert doc["id"] == "good" and doc["source"] == good.source
    store.flush()
    assert store.count() == 1 and store.ids() == {"good"}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sparse_search_ranks_by_the_exact_dot_product(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    records = make_kind_records("sparse", 400, VOCAB, seed=4)
    store.upsert(records)
    store.flush()
    rng = np.random.default_rng(11)
    lossy = 0.0
    for _ in range(12):
        q = kind_embedding("sparse", VOCAB, rng)
        assert q.sparse is not None
        exact = numpy_scores(q.sparse, records)
        kept = numpy_scores(q.sparse, records, feature_weight)  # what the engine scores
        lossy = max(lossy, max(abs(exact[i] - kept[i]) / exact[i] for i in exact))
        want = sorted(exact, key=lambda i: -exact[i])[:20]
        hits = store.search(q, k=20)
        assert [h.id for h in hits] == want
        assert [h.score for h in hits] == pytest.approx([exact[i] for i in want], rel=1e-6)
        body = searches(engine)[-1]
        terms = {str(i): float(v) for i, v in zip(q.sparse.indices, q.sparse.values, strict=True)}
        if flavor == "elasticsearch":
            (clause,) = body["query"]["bool"]["must"]
            assert clause == {
                "sparse_vector": {"field": "embedding", "query_vector": terms, "prune": False}
            }
        else:
            assert body["query"]["bool"]["minimum_should_match"] == 1
            assert body["query"]["bool"]["should"] == [
                {"rank_feature": {"field": f"embedding.{t}", "linear": {}, "boost": w}}
                for t, w in terms.items()
            ]
        assert body["_source"] == {"excludes": ["embedding"]} and "min_score" not in body
    # The engine's own scores are off by up to 0.4%: the exact order is the adapter's work.
    assert 1e-4 < lossy < 2.0**-8


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sparse_search_applies_where_filters(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    records = make_kind_records("sparse", 120, VOCAB, seed=2)
    store.upsert(records)
    store.flush()
    # Terms of middling frequency: some documents the filter keeps share none of them.
    q = Embedding(sparse=SparseVector([20, 40, 60, 80], np.array([0.7, 1.1, 0.4, 1.9]), VOCAB))
    assert q.sparse is not None
    where = {"source": ["doc-1.txt", "doc-3.txt"], "metadata.lang": "en"}
    kept = [r for r in records if matches(row_of(r), where)]
    exact = numpy_scores(q.sparse, kept)
    assert 0 < len(exact) < len(kept)
    assert len(exact) < len(numpy_scores(q.sparse, records))
    hits = store.search(q, k=len(records), where=where)
    assert [h.id for h in hits] == sorted(exact, key=lambda i: -exact[i])
    assert all(h.source in ("doc-1.txt", "doc-3.txt") for h in hits)
    assert searches(engine)[-1]["query"]["bool"]["filter"] == [
        {"terms": {"source": ["doc-1.txt", "doc-3.txt"]}},
        {"terms": {"metadata.lang": ["en"]}},
    ]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_candidate_pool_grows_until_the_top_k_is_exact(flavor: str) -> None:
    # 40 documents the engine keeps at weight 1.0 exactly, then one at 1 + 2^-8 - 2^-20, which
    # it keeps at 1.0 too (truncated): a tie it breaks by index order, after the 40.
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    best = 1.0 + 2.0**-8 - 2.0**-20
    assert feature_weight(best) == 1.0
    store.upsert([sparse_record(f"tie{i:02d}", [5, 9], [1.0, 1.0]) for i in range(40)])
    store.upsert([sparse_record("best", [5], [best])])
    store.flush()
    query = Embedding(sparse=SparseVector([5], np.ones(1, dtype=np.float32), VOCAB))
    hits = store.search(query, k=1)
    assert [h.id for h in hits] == ["best"] and hits[0].score == pytest.approx(best, rel=1e-7)
    # The first 12 candidates all scored 1.0 and could not settle it; the next 48 held all 41.
    assert [b["size"] for b in searches(engine)] == [12, 48]
    # Range search: the engine's bound is widened by the loss, the cut is exact.
    ranged = store.range_search(query, 0.002)
    assert [h.id for h in ranged] == ["best"]
    assert searches(engine)[-1]["min_score"] == pytest.approx(
        (best - 0.002) * (1 - 2.0**-8), rel=1e-5
    )
    assert len(store.range_search(query, 0.01, limit=50)) == 41


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sparse_contract_and_side_table_against_a_stateful_engine(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    check_kind_contract(store, "sparse", dim=VOCAB)
    check_side_table(store)
    store.close()


@pytest.mark.parametrize("flavor", FLAVORS)
def test_reopening_reads_the_kind_and_refuses_another(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    open_sparse(engine).close()
    transport = httpx.MockTransport(engine)
    uri = f"{flavor}://es.test:9200"
    again = open_store(uri, "docs", transport=transport)
    assert again.kind == "sparse" and again.dim == VOCAB
    with pytest.raises(ConfigError, match=r"index 'docs' holds sparse embeddings, not dense"):
        open_store(uri, "docs", kind="dense", transport=transport)
    with pytest.raises(ConfigError, match="holds sparse embeddings, not dense"):
        require_kind(again, "dense")
    open_store(uri, "dense", dim=8, transport=transport).close()
    with pytest.raises(ConfigError, match=r"index 'dense' holds dense embeddings, not sparse"):
        open_store(uri, "dense", kind="sparse", transport=transport)
    assert open_store(uri, "dense", transport=transport).kind == "dense"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_an_index_without_meta_has_the_kind_of_its_field(flavor: str) -> None:
    props: dict[str, Any] = {"embedding": {"type": SPARSE_TYPE[flavor]}, "section_index": {}}
    store = open_mapped(flavor, {"properties": props})
    assert store.kind == "sparse" and store.dim is None  # no vocabulary size noted
    assert open_mapped(flavor, {"properties": props}, dim=VOCAB).dim == VOCAB
    with pytest.raises(StoreError, match="notes dense embeddings"):
        open_mapped(flavor, {"_meta": {"vectorstream.kind": "dense"}, "properties": props})
    with pytest.raises(StoreError, match="'rank_vectors'"):
        open_mapped(flavor, {"properties": {"embedding": {"type": "rank_vectors"}}})


@pytest.mark.parametrize("flavor", FLAVORS)
def test_multivector_is_refused_before_connecting(flavor: str) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(404)

    transport = httpx.MockTransport(record)
    with pytest.raises(ConfigError, match=r"dense and sparse embeddings, not multivector"):
        open_store(f"{flavor}://es.test:9200", "d", dim=8, kind="multivector", transport=transport)
    cls = ElasticsearchStore if flavor == "elasticsearch" else OpenSearchStore
    with pytest.raises(ConfigError, match="not multivector"):
        cls.open(f"{flavor}://es.test:9200", "d", dim=8, kind="multivector", transport=transport)
    assert sent == []


@pytest.mark.parametrize("flavor", FLAVORS)
def test_sparse_queries_the_engines_cannot_score_are_refused(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    store = open_sparse(engine)
    store.upsert([sparse_record("a", [1, 2], [0.5, 0.5])])
    negative = Embedding(sparse=SparseVector([1, 2], np.array([1.0, -1.0]), VOCAB))
    with pytest.raises(ConfigError, match="non-negative"):
        store.search(negative)
    with pytest.raises(ConfigError):
        store.search(np.ones(VOCAB, dtype=np.float32))  # a dense query
    wrong_vocab = Embedding(sparse=SparseVector([1], np.ones(1), VOCAB + 1))
    with pytest.raises(ConfigError, match="vocabulary"):
        store.search(wrong_vocab)
    assert searches(engine) == []
    dense = open_store(
        f"{flavor}://es.test:9200", "d", dim=4, transport=httpx.MockTransport(engine)
    )
    with pytest.raises(ConfigError, match="holds dense embeddings"):
        dense.search(Embedding(sparse=SparseVector([1], np.ones(1), VOCAB)))
