"""Frozen dataclasses that flow through vectorstream.

    Source ──parse──▶ Section ──chunk──▶ Chunk ──embed──▶ Record ──store──▶ Hit

Offsets (``start``/``end``) are character offsets into the *section* text, so that
``section.text[chunk.start:chunk.end] == chunk.text`` always holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

JSONScalar = str | int | float | bool | None


def _own_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    # A private copy (a plain dict, so records pickle across worker processes).
    return dict(value or {})


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document comes from.

    ``uri`` is the identity of the source in the store (an absolute path for files, a caller-given
    id for in-memory texts). ``path`` is set for files; ``text``/``data`` for in-memory sources.
    """

    uri: str
    path: str | None = None
    text: str | None = None
    data: bytes | None = None
    size: int | None = None
    mtime_ns: int | None = None
    media_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class Section:
    """A contiguous piece of a document: a page, a heading's body, a CSV row, a paragraph group.

    ``index`` is the position of the section within its source (0, 1, 2, …). ``image`` holds the
    bytes of an image section (``text`` is then empty).
    """

    text: str
    source: str
    index: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    image: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a section that is embedded as one vector.

    ``chunk_index`` counts chunks within the whole source (not the section), from 0.
    ``start``/``end`` are offsets into the section text. ``n_tokens`` is the model token count
    (without special tokens) when the chunker knew it.
    """

    text: str
    source: str
    chunk_index: int
    start: int
    end: int
    section_index: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    n_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


@dataclass(frozen=True, slots=True, eq=False)
class SparseVector:
    """A sparse embedding: sorted unique ``indices`` and their ``values``."""

    indices: np.ndarray
    values: np.ndarray
    dim: int


@dataclass(frozen=True, slots=True, eq=False)
class Embedding:
    """One embedding of one input: dense (1-D), sparse, or multivector (2-D, one row per token)."""

    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    multivector: np.ndarray | None = None

    @property
    def kind(self) -> str:
        if self.dense is not None:
            return "dense"
        if self.sparse is not None:
            return "sparse"
        if self.multivector is not None:
            return "multivector"
        return "empty"


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """A row in a vector store: one chunk, its vector and where it came from."""

    id: str
    vector: np.ndarray
    text: str
    source: str
    chunk_index: int
    start: int
    end: int
    model: str
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result. ``score`` is a similarity: higher is better (cosine for normalised vectors)."""

    id: str
    score: float
    text: str
    source: str
    chunk_index: int = 0
    start: int = 0
    end: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "text": self.text,
            "source": self.source,
            "chunk_index": self.chunk_index,
            "start": self.start,
            "end": self.end,
            "page": self.page,
            "headings": list(self.headings),
            "metadata": dict(self.metadata),
        }


__all__ = ["Chunk", "Embedding", "Hit", "Record", "Section", "Source", "SparseVector"]
