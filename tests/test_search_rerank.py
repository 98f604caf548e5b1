"""``search --rerank``: the store's candidates ordered again by a cross-encoder, checked against
sentence-transformers' own ``CrossEncoder.rank`` on the same folder and the same texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vectorstream as vs
from _models_support import MODEL_ID, minilm, models_cache
from _pipeline_support import FakeEmbedder, write_corpus
from _rerank_support import cross_encoder, save_cross_encoder
from vectorstream.cli.main import app
from vectorstream.errors import ConfigError
from vectorstream.models import Embedder
from vectorstream.search.rerank import load_reranker, rerank_hits
from vectorstream.types import Hit

__all__ = ["minilm", "models_cache"]  # fixtures imported for pytest


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_cross_encoder(tmp_path_factory.mktemp("ce") / "ce")


def _hits() -> list[Hit]:
    texts = [
        "The telescope observed distant galaxies.",
        "Knead the dough and bake the bread.",
        "",  # an image hit: nothing to read
        "Sailors trimmed the jib as the wind shifted.",
    ]
    return [
        Hit(id=str(i), score=1.0 - i / 10, text=t, source=f"doc{i}", start=i, end=i + len(t))
        for i, t in enumerate(texts)
    ]


def test_rerank_hits_orders_as_the_cross_encoder_does(reranker_dir: Path) -> None:
    reranker = load_reranker(str(reranker_dir))
    query = "bread baking"
    hits = _hits()
    ranked = rerank_hits(query, hits, reranker)
    reference = cross_encoder(reranker_dir).rank(query, [h.text for h in hits if h.text])
    readable = [h for h in hits if h.text]
    assert [h.id for h in ranked[:3]] == [readable[r["corpus_id"]].id for r in reference]
    for hit, ref in zip(ranked, reference, strict=False):
        assert abs(hit.score - float(ref["score"])) <= 1e-4
        assert hit.metadata["vector_score"] == next(h.score for h in hits if h.id == hit.id)
    assert ranked[-1].text == ""  # kept, after the texts
    assert len(rerank_hits(query, hits, reranker, top_n=2)) == 2
    with pytest.raises(ConfigError, match="top_n"):
        rerank_hits(query, hits, reranker, top_n=0)
    with pytest.raises(ConfigError, match="not a reranker"):
        rerank_hits(query, hits, FakeEmbedder())


def test_search_cli_reranks_the_candidates(
    reranker_dir: Path,
    tmp_path: Path,
    minilm: Embedder,
    models_cache: Path,
) -> None:
    corpus = write_corpus(tmp_path / "corpus", copies=1)
    store = f"lancedb://{tmp_path / 'store'}"
    vs.ingest([next(iter(corpus.values())).parent], store=store, model=minilm, workers=0)
    runner = CliRunner()
    args = ["search", "galaxies and telescopes", "--store", store, "--model", MODEL_ID]
    reranked = runner.invoke(
        app,
        [*args, "-k", "3", "--rerank", str(reranker_dir), "--rerank-candidates", "10", "--json"],
    )
    assert reranked.exit_code == 0, reranked.output
    hits = json.loads(reranked.output)["hits"]
    assert len(hits) == 3
    assert all("vector_score" in h["metadata"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    reference = cross_encoder(reranker_dir).predict(
        [("galaxies and telescopes", h["text"]) for h in hits]
    )
    assert max(abs(float(r) - h["score"]) for r, h in zip(reference, hits, strict=True)) <= 1e-4
    bad = runner.invoke(app, [*args, "--rerank", str(tmp_path / "corpus")])
    assert bad.exit_code != 0
