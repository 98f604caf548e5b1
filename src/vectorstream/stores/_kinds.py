"""Embedding kinds in the stores: a collection's kind, query checks and the exact scores.

A collection holds embeddings of one kind, chosen when it is created. Scores are similarities,
higher is better:

* ``dense``: cosine similarity.
* ``sparse``: the dot product over the terms query and document share. Only documents with a
  positive score are hits: with non-negative weights (SPLADE's) that is every document sharing a
  term with the query, and no store has to rank the rest of the collection at zero.
* ``multivector``: MaxSim, the sum over the query's rows of the best cosine similarity with any of
  the document's rows (late interaction, ColBERT). Models give L2-normalised rows, for which the
  cosine is the dot product; rows are normalised here all the same, so every store scores alike.

The functions below are the reference scores (the adapters that score in Python use them, and the
tests compare every store against them) and the check a query goes through before a store sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._vectors import check_query, embedding_problem
from ..errors import ConfigError
from ..types import EMBEDDING_KINDS, Embedding, EmbeddingKind, SparseVector

# Where a collection's kind and width are written in the stores that keep free-form metadata
# (an Arrow schema, Qdrant's collection metadata, Milvus' collection properties).
KIND_KEY = "vectorstream.kind"
DIM_KEY = "vectorstream.dim"

Query = np.ndarray | Embedding


def check_kind(kind: Any) -> EmbeddingKind:
    """``kind`` as an ``EmbeddingKind``, or ``ConfigError`` naming the kinds there are."""
    for known in EMBEDDING_KINDS:
        if kind == known:
            return known
    raise ConfigError(f"kind must be one of {list(EMBEDDING_KINDS)}, got {kind!r}")


def settle_kind(what: str, stored: EmbeddingKind, wanted: EmbeddingKind | None) -> EmbeddingKind:
    """The kind of an existing collection, refusing a caller that asked for another one."""
    if wanted is not None and wanted != stored:
        raise ConfigError(
            f"{what} holds {stored} embeddings, not {wanted}; use another collection, or open "
            f"this one with kind={stored!r} and a {stored} model"
        )
    return stored


def refuse_kind(vendor: str, kind: EmbeddingKind, kinds: Sequence[str]) -> ConfigError:
    """The error for a kind an adapter (or one of its forms) cannot hold."""
    return ConfigError(
        f"{vendor} collections here hold {' and '.join(sorted(kinds))} embeddings, not {kind}; "
        f"choose a store that holds {kind} embeddings (see docs/stores.md)"
    )


def unit_rows(rows: Any) -> np.ndarray:
    """Rows scaled to norm 1 (float32); an all-zero row stays zero."""
    m = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.maximum(norms, np.finfo(np.float32).tiny)


def pooled(rows: Any) -> np.ndarray:
    """One vector standing for a multivector: the mean of its unit rows, normalised."""
    return unit_rows(unit_rows(rows).mean(axis=0))


def query_embedding(query: Query, kind: EmbeddingKind, dim: int | None) -> Embedding:
    """A valid query for a collection of ``kind``, or ``ConfigError`` saying what is wrong.

    A plain array is a dense query; other kinds are asked with an ``Embedding`` of that kind.
    Multivector rows come back normalised (see the module doc).
    """
    if not isinstance(query, Embedding):
        if kind != "dense":
            raise ConfigError(
                f"this collection holds {kind} embeddings: query it with an "
                f"Embedding({kind}=...), not a {type(query).__name__}"
            )
        return Embedding(dense=check_query(query, dim))
    if query.kind != kind:
        raise ConfigError(
            f"this collection holds {kind} embeddings; the query is a {query.kind} one"
        )
    problem = embedding_problem(query, dim)
    if problem is not None:
        raise ConfigError(f"query: {problem}")
    if query.dense is not None:
        return Embedding(dense=check_query(query.dense, dim))
    if query.sparse is not None:
        if not np.any(query.sparse.values):
            raise ConfigError("the sparse query has no non-zero weight: it matches nothing")
        return query
    rows = np.asarray(query.multivector, dtype=np.float32)
    if not np.all(np.any(rows, axis=1)):
        raise ConfigError("the multivector query has an all-zero row (its cosine is undefined)")
    return Embedding(multivector=unit_rows(rows))


def dense_of(query: Query) -> Any:
    """The dense vector of a query given as an array or as a dense ``Embedding``."""
    if isinstance(query, Embedding):
        if query.kind != "dense":
            raise ConfigError(
                f"this collection holds dense embeddings; the query is a {query.kind} one"
            )
        return query.dense
    return query


# -- reference scores --------------------------------------------------------------------------


def maxsim(query_rows: np.ndarray, documents: Sequence[Any]) -> np.ndarray:
    """MaxSim of a query (rows) against each document (rows), as one float64 score each."""
    if not documents:
        return np.zeros(0)
    q = unit_rows(query_rows)
    docs = [unit_rows(d) for d in documents]
    lengths = np.array([d.shape[0] for d in docs])
    sims = np.concatenate(docs) @ q.T  # (all document rows, query rows): one product
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    best = np.maximum.reduceat(sims, starts, axis=0)  # each document's best row per query row
    return best.sum(axis=1, dtype=np.float64)


def sparse_scores(
    query: SparseVector, indices: np.ndarray, values: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Dot products of ``query`` with documents given flat: their terms and weights one after
    another, ``lengths[i]`` of them for document ``i``."""
    n = int(lengths.shape[0])
    if n == 0 or query.indices.size == 0 or indices.size == 0:
        return np.zeros(n)
    qi, qv = query.indices, query.values
    pos = np.minimum(np.searchsorted(qi, indices), qi.size - 1)
    shared = qi[pos] == indices
    contrib = np.where(shared, values.astype(np.float64) * qv[pos], 0.0)
    owner = np.repeat(np.arange(n), lengths)
    return np.bincount(owner, weights=contrib, minlength=n)


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    """The dot product of two sparse vectors (the reference the tests use)."""
    lengths = np.array([b.indices.size])
    return float(sparse_scores(a, b.indices, b.values, lengths)[0])


def top_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first."""
    n = int(scores.shape[0])
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    return part[np.argsort(-scores[part], kind="stable")]


__all__ = [
    "DIM_KEY",
    "KIND_KEY",
    "Query",
    "check_kind",
    "dense_of",
    "maxsim",
    "pooled",
    "query_embedding",
    "refuse_kind",
    "settle_kind",
    "sparse_dot",
    "sparse_scores",
    "top_order",
    "unit_rows",
]
