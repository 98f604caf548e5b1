"""Frozen dataclasses that flow through vectorstream.

    Source ──parse──▶ Section ──chunk──▶ Chunk ──embed──▶ Record ──store──▶ Hit

Offsets (``start``/``end``) are character offsets into the *document text*: the concatenation of
the texts of a source's sections, in order (for text, markdown and code that is the file's decoded
text). A section starts at ``section.start``, so
``document[chunk.start:chunk.end] == chunk.text`` always holds, and for a chunk of one section
``section.text[chunk.start - section.start:chunk.end - section.start] == chunk.text``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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

    ``index`` is the position of the section within its source (0, 1, 2, …); ``start`` is the
    offset of its text in the document text (the sections' texts concatenated in order; the
    parser registry sets both). ``image`` holds the bytes of an image section (``text`` is then
    empty).
    """

    text: str
    source: str
    index: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    image: bytes | None = None
    start: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a section that is embedded as one vector.

    ``chunk_index`` counts chunks within the whole source (not the section), from 0.
    ``start``/``end`` are offsets into the document text; a chunk may span several consecutive
    sections, and then ``section_index``, ``page`` and ``headings`` are those of its first one.
    ``n_tokens`` is the model token count (without special tokens) when the chunker knew it.
    ``image`` holds an image's bytes for an image model (``text`` is then empty, and the offsets 0).
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
    image: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _own_mapping(self.metadata))


EmbeddingKind = Literal["dense", "sparse", "multivector"]
EMBEDDING_KINDS: tuple[EmbeddingKind, ...] = ("dense", "sparse", "multivector")


@dataclass(frozen=True, slots=True, eq=False)
class SparseVector:
    """A sparse embedding over a vocabulary of ``dim`` terms: term ``indices`` and their ``values``."""

    indices: np.ndarray
    values: np.ndarray
    dim: int

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices, dtype=np.int64)
        val = np.asarray(self.values, dtype=np.float32)
        if idx.ndim != 1 or val.shape != idx.shape:
            raise ValueError(
                f"sparse indices and values must be 1-D of one length, got {idx.shape} and {val.shape}"
            )
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "values", val)

    @property
    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.values.nbytes)


@dataclass(frozen=True, slots=True, eq=False)
class Embedding:
    """One embedding of one input, of exactly one kind.

    ``dense``: one 1-D vector; ``sparse``: term weights (SPLADE); ``multivector``: a 2-D array,
    one row per token (ColBERT). Build one with ``Embedding(dense=v)`` and so on.
    """

    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    multivector: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = [k for k in EMBEDDING_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an Embedding holds exactly one of {list(EMBEDDING_KINDS)}, got {given}"
            )
        if self.dense is not None and np.ndim(self.dense) != 1:
            raise ValueError(f"a dense embedding is 1-D, got shape {np.shape(self.dense)}")
        if self.multivector is not None and np.ndim(self.multivector) != 2:
            raise ValueError(
                f"a multivector embedding is 2-D, got shape {np.shape(self.multivector)}"
            )

    @property
    def kind(self) -> EmbeddingKind:
        if self.dense is not None:
            return "dense"
        if self.sparse is not None:
            return "sparse"
        return "multivector"

    @property
    def nbytes(self) -> int:
        if self.dense is not None:
            return int(np.asarray(self.dense).nbytes)
        if self.sparse is not None:
            return self.sparse.nbytes
        return int(np.asarray(self.multivector).nbytes)

    def as_dense(self) -> np.ndarray:
        """The dense vector; a store that holds only dense vectors reads records through this."""
        if self.dense is None:
            raise TypeError(f"expected a dense embedding, got a {self.kind} one")
        return self.dense


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """A row in a vector store: one chunk, its embedding and where it came from.

    ``start``/``end`` are offsets into the source's document text and ``section_index`` is the
    index of the chunk's first section (see :class:`Chunk`).
    """

    id: str
    embedding: Embedding
    text: str
    source: str
    chunk_index: int
    start: int
    end: int
    model: str
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    section_index: int = 0

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
    section_index: int = 0

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
            "section_index": self.section_index,
            "page": self.page,
            "headings": list(self.headings),
            "metadata": dict(self.metadata),
        }


__all__ = [
    "EMBEDDING_KINDS",
    "Chunk",
    "Embedding",
    "EmbeddingKind",
    "Hit",
    "Record",
    "Section",
    "Source",
    "SparseVector",
]
