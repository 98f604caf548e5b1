"""``vectorstream.search``: query embedding, store lookup, filters, DIPR range mode, model checks."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from _store_support import FakeEmbedder, text_records
from vectorstream.errors import ConfigError, ModelError
from vectorstream.search import EmbedderCache, alpha_to_beta, search
from vectorstream.search import _search as search_impl
from vectorstream.stores import StoreCapabilities, dipr_cut, open_store
from vectorstream.types import Embedding, Hit, Record, SparseVector

TEXTS = [
    "the bakery sells fresh bread every morning",
    "a compiler turns source code into machine code",
    "the river floods the orchard in spring",
    "the council meets to discuss the train timetable",
    "bread and cakes from the village bakery",
    "an index makes database lookups fast",
    "apples ripen in the orchard in autumn",
    "the train leaves the station at noon",
]


@pytest.fixture
def fake() -> FakeEmbedder:
    # 256 dimensions: word directions are then nearly orthogonal, so shared words decide.
    return FakeEmbedder(dim=256)


@pytest.fixture
def uri(tmp_path: Path, fake: FakeEmbedder) -> Iterator[str]:
    uri = f"lancedb://{tmp_path / 'db'}"
    store = open_store(uri, "docs", dim=fake.dim)
    store.upsert(text_records(TEXTS, fake, source_of=lambda i: f"doc{i % 3}.txt"))
    store.close()
    yield uri


def test_search_by_uri_finds_the_text(uri: str, fake: FakeEmbedder) -> None:
    hits = search("fresh bread from the bakery", store=uri, collection="docs", model=fake, k=3)
    assert {h.text for h in hits[:2]} == {TEXTS[0], TEXTS[4]}
    assert hits[0].score > hits[1].score > hits[2].score
    assert all(isinstance(h, Hit) for h in hits)


def test_defaults_come_from_settings(
    uri: str, fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSTREAM_STORE", uri)
    monkeypatch.setenv("VECTORSTREAM_COLLECTION", "docs")
    assert search("compiler source code", model=fake, k=1)[0].text == TEXTS[1]
    monkeypatch.setenv("VECTORSTREAM_COLLECTION", "nothing-here")
    with pytest.raises(Exception, match="does not exist"):
        search("compiler", model=fake)


def test_open_store_instance_is_used_and_left_open(uri: str, fake: FakeEmbedder) -> None:
    store = open_store(uri, "docs", mode="r")
    assert search("train station", store=store, model=fake, k=1)[0].text == TEXTS[7]
    assert search("orchard", store=store, model=fake, k=1)  # still usable: not closed by search
    store.close()


def test_filters_are_passed_to_the_store(uri: str, fake: FakeEmbedder) -> None:
    hits = search(
        "bakery bread", store=uri, collection="docs", model=fake, where={"source": "doc1.txt"}
    )
    assert hits and {h.source for h in hits} == {"doc1.txt"}
    assert hits[0].text == TEXTS[4]
    hits = search("orchard", store=uri, collection="docs", model=fake, where={"metadata.i": [2, 6]})
    assert {h.text for h in hits} == {TEXTS[2], TEXTS[6]}


def test_range_mode_is_dipr(uri: str, fake: FakeEmbedder) -> None:
    store = open_store(uri, "docs", mode="r")
    vector = fake.embed(["bread bakery orchard"])[0]
    reference = store.search(vector, 100)
    for beta in (0.0, 0.1, 0.4):
        hits = search(
            "bread bakery orchard", store=store, model=fake, mode="range", beta=beta, k=100
        )
        assert [h.id for h in hits] == [h.id for h in dipr_cut(reference, beta)]
    # alpha converts to beta = -tau * ln(alpha): the same hits as that beta.
    by_alpha = search("bread bakery orchard", store=store, model=fake, mode="range", alpha=0.02)
    by_beta = search(
        "bread bakery orchard", store=store, model=fake, mode="range", beta=alpha_to_beta(0.02)
    )
    assert [h.id for h in by_alpha] == [h.id for h in by_beta]
    # k caps a range answer.
    assert len(search("bread", store=store, model=fake, mode="range", beta=2.0, k=3)) == 3
    store.close()


def test_alpha_to_beta_formula() -> None:
    assert alpha_to_beta(1.0) == 0.0
    assert alpha_to_beta(0.1) == pytest.approx(0.05 * math.log(10))
    assert alpha_to_beta(0.5, temperature=1 / math.sqrt(384)) == pytest.approx(
        math.log(2) / math.sqrt(384)
    )
    # A smaller ratio admits more: beta grows as alpha shrinks.
    assert alpha_to_beta(0.01) > alpha_to_beta(0.1) > alpha_to_beta(0.9)
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ConfigError, match="alpha"):
            alpha_to_beta(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "nearest"}, "mode must be"),
        ({"mode": "range"}, "needs beta"),
        ({"mode": "range", "beta": 0.1, "alpha": 0.5}, "not both"),
        ({"beta": 0.1}, "'range' only"),
        ({"k": 0}, "k must be"),
        ({"mode": "range", "beta": -0.5}, "beta must be"),
        ({"where": {"body": "x"}}, "cannot filter"),
    ],
)
def test_bad_arguments(
    uri: str, fake: FakeEmbedder, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        search("bread", store=uri, collection="docs", model=fake, **kwargs)  # type: ignore[arg-type]


def test_empty_query_is_refused(uri: str, fake: FakeEmbedder) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        search("   ", store=uri, collection="docs", model=fake)


def test_query_model_must_match_the_collection(uri: str) -> None:
    other = FakeEmbedder(dim=256, model_id="another-model")
    with pytest.raises(
        ConfigError, match=r"built with fake-model but the query model is another-model"
    ):
        search("bread", store=uri, collection="docs", model=other)
    wrong_dim = FakeEmbedder(dim=16)
    with pytest.raises(ConfigError, match="256-dimensional"):
        search("bread", store=uri, collection="docs", model=wrong_dim)


def test_search_never_takes_the_writer_lock(uri: str, fake: FakeEmbedder) -> None:
    writer = open_store(uri, "docs", dim=fake.dim)  # an ingest holds the lock
    assert search("compiler", store=uri, collection="docs", model=fake, k=1)[0].text == TEXTS[1]
    writer.close()


def test_spec_strings_load_once_through_the_cache(
    uri: str, fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs: list[str] = []

    def loader(spec: str) -> FakeEmbedder:
        specs.append(spec)
        return fake

    monkeypatch.setattr(search_impl, "EMBEDDERS", EmbedderCache(loader=loader))
    monkeypatch.setenv("VECTORSTREAM_MODEL", "configured-spec")
    for _ in range(3):
        search("bread", store=uri, collection="docs", model="my-spec")
    search("bread", store=uri, collection="docs")  # model=None: the configured spec
    assert specs == ["my-spec", "configured-spec"]


def test_embedder_cache_is_a_thread_safe_lru() -> None:
    started = threading.Event()
    calls: list[str] = []

    def slow_loader(spec: str) -> FakeEmbedder:
        calls.append(spec)
        started.wait(2)  # keep the load in progress while the other threads ask
        return FakeEmbedder(model_id=spec)

    cache = EmbedderCache(capacity=2, loader=slow_loader)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join()
    assert calls == ["a"] and len({id(g) for g in got}) == 1
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # evicts b, the least recently used
    assert len(cache) == 2
    cache.get("a")
    cache.get("b")
    assert calls == ["a", "b", "c", "b"]
    with pytest.raises(ValueError):
        EmbedderCache(capacity=0)


class _TopKOnlyStore:
    """A store without a native range query (a protocol seam): search() must cut the range."""

    uri = "memory:"
    collection = "docs"
    capabilities = StoreCapabilities(range_search=False)

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.asked: list[int] = []

    def search(self, vector: np.ndarray, k: int = 10, where: object = None) -> list[Hit]:
        self.asked.append(k)
        return self.hits[:k]

    def range_search(self, *args: object, **kwargs: object) -> list[Hit]:
        raise AssertionError("range_search must not be called on this store")

    def upsert(self, records: object) -> None: ...
    def delete(self, ids: object = None, *, source: object = None) -> int:
        return 0

    def ids(self, source: object = None) -> set[str]:
        return set()

    def count(self) -> int:
        return len(self.hits)

    def flush(self) -> None: ...
    def close(self) -> None: ...


def test_range_falls_back_to_topk_then_cut(fake: FakeEmbedder) -> None:
    hits = [Hit(id=str(i), score=1.0 - i * 0.1, text="", source="s") for i in range(10)]
    store = _TopKOnlyStore(hits)
    got = search("q", store=store, model=fake, mode="range", beta=0.25, k=8)  # type: ignore[arg-type]
    assert [h.id for h in got] == ["0", "1", "2"]
    assert store.asked == [8]


# -- the real model -----------------------------------------------------------------------------

REAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def real_cache() -> EmbedderCache:
    from vectorstream.models import load_model

    # The torch backend loads without exporting an ONNX graph, which keeps this test short.
    cache = EmbedderCache(loader=lambda spec: load_model(spec, backend="torch"))
    try:
        cache.get(REAL_MODEL)
    except ModelError as exc:
        pytest.skip(f"the real model cannot be loaded here: {exc}")
    return cache


def test_real_model_search(
    tmp_path: Path, real_cache: EmbedderCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = real_cache.get(REAL_MODEL)
    uri = f"lancedb://{tmp_path}"
    with open_store(uri, "docs", dim=model.dim) as store:  # type: ignore[attr-defined]
        store.upsert(text_records(TEXTS, model))
    monkeypatch.setattr(search_impl, "EMBEDDERS", real_cache)
    hits = search("where can I buy a loaf?", store=uri, collection="docs", model=REAL_MODEL, k=2)
    assert {h.text for h in hits} == {TEXTS[0], TEXTS[4]}
    assert 0.2 < hits[0].score <= 1.0
    near = search(
        "when does the train depart?",
        store=uri,
        collection="docs",
        model=REAL_MODEL,
        mode="range",
        alpha=0.1,
    )
    assert near[0].text == TEXTS[7]
    assert all(h.score >= near[0].score - alpha_to_beta(0.1) - 1e-6 for h in near)
    assert len(near) < len(TEXTS)  # the range adapts: unrelated texts stay out


def test_package_level_search_is_callable(uri: str, fake: FakeEmbedder) -> None:
    import vectorstream
    import vectorstream.search as search_package

    # Whether vectorstream.search is the function or (after the import above) the subpackage,
    # calling it searches.
    assert callable(vectorstream.search)
    hits = vectorstream.search("compiler source code", store=uri, collection="docs", model=fake)
    assert hits[0].text == TEXTS[1]
    assert search_package.search is search


# -- sparse and multivector collections: the query side of the model --------------------------


class KindQueryModel:
    """A sparse or multivector model at the protocol seam: a bag of hashed words.

    Sparse: one term per word (a vocabulary of 512), weight 1 per occurrence; multivector: one
    fixed random unit row per word. Queries go through ``embed_queries`` (counted), as the models
    of these kinds ask; ``embed`` embeds documents only.
    """

    def __init__(self, kind: str, dim: int = 32) -> None:
        self.kind = kind
        self.dim = 512 if kind == "sparse" else dim
        self.model_id = f"fake-{kind}"
        self.query_calls = 0
        self._words = FakeEmbedder(dim=dim)

    def _one(self, text: str) -> Embedding:
        words = text.lower().split()
        if self.kind == "sparse":
            terms = [int.from_bytes(w.encode()[:4].ljust(4, b"_"), "little") % 512 for w in words]
            ids, counts = np.unique(np.asarray(terms, dtype=np.int64), return_counts=True)
            return Embedding(sparse=SparseVector(ids, counts.astype(np.float32), 512))
        return Embedding(multivector=np.stack([self._words.embed([w])[0] for w in words]))

    def embed(self, texts: list[str]) -> list[Embedding]:
        return [self._one(t) for t in texts]

    def embed_queries(self, texts: list[str]) -> list[Embedding]:
        self.query_calls += 1
        return self.embed(texts)


def _kind_collection(path: Path, model: KindQueryModel) -> str:
    uri = f"lancedb://{path}"
    store = open_store(uri, "docs", dim=model.dim, kind=model.kind)
    store.upsert(
        [
            Record(
                id=f"t{i}",
                embedding=e,
                text=text,
                source=f"doc{i % 3}.txt",
                chunk_index=0,
                start=0,
                end=len(text),
                model=model.model_id,
            )
            for i, (text, e) in enumerate(zip(TEXTS, model.embed(TEXTS), strict=True))
        ]
    )
    store.close()
    return uri


@pytest.mark.parametrize("kind", ["sparse", "multivector"])
def test_a_sparse_or_multivector_collection_is_searched_with_the_query_side(
    kind: str, tmp_path: Path
) -> None:
    model = KindQueryModel(kind)
    uri = _kind_collection(tmp_path / "db", model)
    hits = search("fresh bread from the bakery", store=uri, collection="docs", model=model, k=3)
    assert model.query_calls == 1
    assert {h.text for h in hits[:2]} == {TEXTS[0], TEXTS[4]}
    assert hits[0].score > hits[2].score
    # The store's own scores for the model's query embedding: search passed it through as is.
    store = open_store(uri, "docs", mode="r")
    query = model.embed_queries(["fresh bread from the bakery"])[0]
    assert [(h.id, h.score) for h in store.search(query, 3)] == [(h.id, h.score) for h in hits]
    # Range mode and filters work the same way.
    ranged = search("bread bakery", store=store, model=model, mode="range", beta=0.5, k=8)
    short = model.embed_queries(["bread bakery"])[0]
    assert len(ranged) >= 2
    assert [h.id for h in ranged] == [h.id for h in dipr_cut(store.search(short, 8), 0.5)]
    only = search("bread bakery", store=store, model=model, where={"source": "doc1.txt"}, k=8)
    assert only and {h.source for h in only} == {"doc1.txt"}
    store.close()


def test_a_query_of_another_kind_than_the_collection_is_refused(tmp_path: Path) -> None:
    sparse = KindQueryModel("sparse")
    uri = _kind_collection(tmp_path / "db", sparse)
    dense = FakeEmbedder(dim=32, model_id=sparse.model_id)  # even under the collection's name
    with pytest.raises(ConfigError, match="holds sparse embeddings"):
        search("bread", store=uri, collection="docs", model=dense)
    multi = KindQueryModel("multivector")
    multi.model_id = sparse.model_id
    with pytest.raises(ConfigError, match=r"makes multivector query embeddings.*holds sparse"):
        search("bread", store=uri, collection="docs", model=multi)
