"""The embedding kinds in a pgvector table: column types, the values written, how a search ranks.

* ``dense``: ``embedding vector(dim)``, an HNSW index (``vector_cosine_ops``); the score is the
  cosine similarity ``1 - (embedding <=> q)``.
* ``sparse``: ``embedding sparsevec(dim)`` (pgvector 0.7+); the score is the inner product
  ``-(embedding <#> q)``, and only rows with a positive one are hits. No index: pgvector's HNSW
  index takes sparse vectors of at most 1,000 non-zero terms, which SPLADE documents can exceed,
  so a search is exact and reads every row passing the filter (linear in the table).
* ``multivector``: pgvector has no MaxSim. ``embedding vector(dim)`` holds one pooled vector per
  record (the mean of its unit token rows, normalised), indexed and searched like a dense one,
  and ``tokens bytea`` the token rows themselves (float32, little-endian, row after row). A
  search takes the candidates nearest by pooled vector (``rerank_factor`` × k of them, at least
  ``rerank_factor`` × 10) and ranks them by exact MaxSim over their tokens, in numpy. Keeping the
  tokens in the record's own row (not a child table) makes an upsert or a delete one row's work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import EmbeddingKind, Record
from ._kinds import pooled

BASE_COLUMNS = (
    "id",
    "embedding",
    "text",
    "source",
    "page",
    "start_offset",
    "end_offset",
    "chunk_index",
    "headings",
    "metadata",
    "model",
    "section_index",
)
BASE_TYPES = (
    "text",
    "vector",
    "text",
    "text",
    "int4",
    "int4",
    "int4",
    "int4",
    "text[]",
    "jsonb",
    "text",
    "int4",
)


def copy_layout(kind: EmbeddingKind) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The columns a binary ``COPY`` of records of ``kind`` fills, and their types."""
    if kind == "sparse":
        return BASE_COLUMNS, ("text", "sparsevec", *BASE_TYPES[2:])
    if kind == "multivector":
        return (*BASE_COLUMNS, "tokens"), (*BASE_TYPES, "bytea")
    return BASE_COLUMNS, BASE_TYPES


def embedding_sql(kind: EmbeddingKind) -> str:
    """The SQL type of the ``embedding`` column (``{}`` takes the width)."""
    return "sparsevec({})" if kind == "sparse" else "vector({})"


def extra_columns_sql(kind: EmbeddingKind) -> str:
    """Columns a table of ``kind`` has beyond the shared ones."""
    return ", tokens bytea NOT NULL" if kind == "multivector" else ""


def indexed(kind: EmbeddingKind) -> bool:
    """Whether a table of ``kind`` gets an HNSW index on ``embedding`` (see the module doc)."""
    return kind != "sparse"


def stored_kind(embedding_type: str, has_tokens: bool) -> EmbeddingKind:
    """The kind of a table from ``format_type`` of its ``embedding`` column and its columns."""
    if embedding_type.startswith("sparsevec"):
        return "sparse"
    return "multivector" if has_tokens else "dense"


def embedding_values(record: Record, kind: EmbeddingKind, dim: int) -> tuple[Any, ...]:
    """What a record writes to ``embedding`` (and ``tokens``), in the ``COPY`` order."""
    e = record.embedding
    if kind == "sparse" and e.sparse is not None:
        from pgvector import SparseVector

        sv = e.sparse
        return (SparseVector(dict(zip(sv.indices.tolist(), sv.values.tolist(), strict=True)), dim),)
    if kind == "multivector" and e.multivector is not None:
        rows = np.asarray(e.multivector, dtype="<f4")
        return pooled(rows), rows.tobytes()
    return (np.asarray(e.as_dense(), dtype=np.float32),)


def sparse_query(indices: np.ndarray, values: np.ndarray, dim: int) -> Any:
    """A sparse query as pgvector's ``SparseVector``."""
    from pgvector import SparseVector

    return SparseVector(dict(zip(indices.tolist(), values.tolist(), strict=True)), dim)


def token_rows(raw: bytes, dim: int) -> np.ndarray:
    """The token rows a ``tokens`` value holds."""
    return np.frombuffer(raw, dtype="<f4").reshape(-1, dim)


def candidates(k: int, rerank_factor: int) -> int:
    """How many pooled-vector neighbours a multivector search ranks by exact MaxSim."""
    return rerank_factor * max(k, 10)


__all__ = [
    "candidates",
    "copy_layout",
    "embedding_sql",
    "embedding_values",
    "extra_columns_sql",
    "indexed",
    "sparse_query",
    "stored_kind",
    "token_rows",
]
