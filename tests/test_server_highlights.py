"""The highlights engine as a library (``vectorstream.search.highlights``): offsets, ranking, and
the cache bounded in bytes."""

from __future__ import annotations

import numpy as np
import pytest

from _server_support import FakeEmbedder, real_model
from vectorstream.chunking import ChunkOptions
from vectorstream.errors import ConfigError
from vectorstream.search.highlights import (
    HighlightDocument,
    HighlightEngine,
    VectorCache,
    _Chunked,
    highlights,
)
from vectorstream.types import Section

TEXT = (
    "Whales are mammals that live in the ocean and breathe air. "
    "Compilers translate source code into machine instructions. "
    "A good espresso needs finely ground coffee and hot water under pressure."
)
SMALL = ChunkOptions(splitter="sentences", chunk_tokens=16, overlap=0)


def entry(n: int, dim: int = 8) -> _Chunked:
    return _Chunked(np.zeros((n, 4), np.int64), np.zeros((n, dim), np.float32))


def test_the_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used() -> None:
    one = entry(10).nbytes
    cache = VectorCache(max_bytes=3 * one)
    for key in "abc":
        cache.put(key, entry(10))
    assert cache.bytes == 3 * one and len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("d", entry(10))
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes <= cache.max_bytes
    cache.put("huge", entry(1000))  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
    assert (cache.hits, cache.misses) == (2, 2)


def test_real_model_finds_the_passage_and_offsets_point_into_the_text() -> None:
    results = highlights(
        "a drink made from coffee",
        {"doc": TEXT},
        model=real_model(),
        k_per_document=3,
        chunk_options=SMALL,
    )
    (doc,) = results
    assert doc.id == "doc" and doc.chunks == 3 and not doc.cached
    assert "espresso" in doc.highlights[0].text
    assert [h.score for h in doc.highlights] == sorted(
        (h.score for h in doc.highlights), reverse=True
    )
    for h in doc.highlights:
        assert TEXT[h.start : h.end] == h.text


def test_a_repeated_document_is_not_embedded_again() -> None:
    fake = FakeEmbedder()
    engine = HighlightEngine(fake, options=SMALL, cache_bytes=1 << 20)
    docs = [
        HighlightDocument.from_text("a", TEXT),
        HighlightDocument.from_text("b", "Whales and dolphins swim."),
    ]
    first = engine.highlight("whales", docs)
    embedded = sum(fake.calls)
    assert embedded == first[0].chunks + first[1].chunks + 1
    second = engine.highlight("compilers", [*docs, HighlightDocument.from_text("c", TEXT)])
    assert [d.cached for d in second] == [
        True,
        True,
        True,
    ]  # same text under another id: same entry
    assert sum(fake.calls) - embedded == 1  # the query only
    assert "Compilers" in second[2].highlights[0].text


def test_sections_of_a_parsed_file_keep_their_index_and_page() -> None:
    sections = (
        Section(text="Nothing to see on the first page.", source="f", index=0, page=1),
        Section(text="Whales breathe air through a blowhole.", source="f", index=1, page=2),
    )
    engine = HighlightEngine(FakeEmbedder(), options=SMALL, cache_bytes=0)
    (doc,) = engine.highlight(
        "whales breathe", [HighlightDocument("f", sections)], k_per_document=1
    )
    best = doc.highlights[0]
    assert (best.section_index, best.page) == (1, 2)
    assert sections[1].text[best.start : best.end] == best.text


def test_bad_arguments_are_config_errors() -> None:
    engine = HighlightEngine(FakeEmbedder(), options=SMALL)
    with pytest.raises(ConfigError):
        engine.highlight("q", [HighlightDocument.from_text("a", TEXT)], k_per_document=0)
    with pytest.raises(ConfigError):
        highlights("q", [42], model=FakeEmbedder())  # type: ignore[list-item]
