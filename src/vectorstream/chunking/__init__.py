"""Chunkers: the sections of one source → chunks with exact offsets and token counts.

    from vectorstream.chunking import ChunkOptions, load_tokenizer, make_chunker

    chunker = make_chunker(ChunkOptions(splitter="markdown"), load_tokenizer(path), max_tokens=256)
    for chunk in chunker.chunk(sections):
        assert section.text[chunk.start:chunk.end] == chunk.text

Splitters: ``tokens`` (overlapping token windows), ``sentences`` (sentence packing),
``markdown`` (headings → paragraphs → sentences → tokens, the default) and ``semantic``
(split where adjacent sentences' embeddings diverge). A pipeline takes any other
:class:`ChunkerFactory` in place of :func:`make_chunker`. See docs/chunking.md.
"""

from __future__ import annotations

from ._chunker import (
    MAX_CHARS_PER_TOKEN,
    Chunker,
    MarkdownChunker,
    SemanticChunker,
    SentenceChunker,
    TokenChunker,
)
from ._factory import ChunkerFactory, effective_limit, make_chunker
from ._options import SEMANTIC_PERCENTILE, SPLITTERS, ChunkOptions
from ._sentences import split_sentences
from ._tokens import load_tokenizer

__all__ = [
    "MAX_CHARS_PER_TOKEN",
    "SEMANTIC_PERCENTILE",
    "SPLITTERS",
    "ChunkOptions",
    "Chunker",
    "ChunkerFactory",
    "MarkdownChunker",
    "SemanticChunker",
    "SentenceChunker",
    "TokenChunker",
    "effective_limit",
    "load_tokenizer",
    "make_chunker",
    "split_sentences",
]
