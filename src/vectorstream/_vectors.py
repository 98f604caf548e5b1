"""The one rule for what a vector must look like, for queries and for records of every kind.

A dense vector (a query, or a record's dense embedding) is 1-D, numeric, finite and of the
collection's dimension. A sparse embedding has sorted, unique term ids within its vocabulary, finite
weights, and a vocabulary of the collection's size. A multivector is 2-D with at least one row,
finite, and each row as wide as the collection's vectors.

Queries that break the rule raise ``ConfigError`` (the caller asked for something impossible);
records that break it get a reason string, because the writer sets such records aside and keeps
writing the rest. Stores, the retrying writer, search and the server all check through here, so a
vector is valid or not in the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError
from .types import Embedding

__all__ = [
    "check_query",
    "dense_problem",
    "embedding_problem",
    "embedding_problems",
    "embedding_width",
]


def _numeric(array: np.ndarray) -> bool:
    # Booleans, strings and objects are not vectors, even where numpy could cast them.
    return array.dtype.kind in "iuf"


def dense_problem(vector: Any, dim: int | None, what: str = "vector") -> str | None:
    """Why ``vector`` is not a valid dense vector of dimension ``dim`` (any when ``None``)."""
    v = np.asarray(vector)
    if v.ndim != 1:
        return f"{what} must be 1-D, got shape {tuple(v.shape)}"
    if not _numeric(v):
        return f"{what} must be numeric, got dtype {v.dtype}"
    if dim is not None and v.shape[0] != dim:
        return f"{what} has dimension {v.shape[0]}; the store holds {dim}-dimensional vectors"
    if not np.isfinite(v).all():
        return f"{what} contains NaN or infinity"
    return None


def check_query(vector: Any, dim: int | None) -> np.ndarray:
    """A valid dense query vector as float32, or ``ConfigError`` saying what is wrong with it."""
    problem = dense_problem(vector, dim, "query vector")
    if problem is not None:
        raise ConfigError(problem)
    return np.asarray(vector, dtype=np.float32)


def embedding_width(embedding: Embedding) -> int:
    """The dimension an embedding is checked against: its length, vocabulary or row width."""
    if embedding.sparse is not None:
        return int(embedding.sparse.dim)
    array = embedding.dense if embedding.dense is not None else embedding.multivector
    return int(np.asarray(array).shape[-1])


def embedding_problem(embedding: Embedding, dim: int | None) -> str | None:
    """Why a record's embedding cannot be stored in a collection of dimension ``dim``."""
    if embedding.dense is not None:
        return dense_problem(embedding.dense, dim)
    if embedding.sparse is not None:
        sv = embedding.sparse
        if dim is not None and sv.dim != dim:
            return f"sparse vector has a vocabulary of {sv.dim} terms; the store holds {dim}"
        idx = sv.indices
        if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= sv.dim):
            return f"sparse vector has term ids outside [0, {sv.dim})"
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            return "sparse vector term ids must be sorted and unique"
        if not np.isfinite(sv.values).all():
            return "sparse vector contains NaN or infinity"
        return None
    m = np.asarray(embedding.multivector)
    if m.ndim != 2 or m.shape[0] == 0:
        return f"multivector must be 2-D with at least one row, got shape {tuple(m.shape)}"
    if not _numeric(m):
        return f"multivector must be numeric, got dtype {m.dtype}"
    if dim is not None and m.shape[1] != dim:
        return (
            f"multivector rows have dimension {m.shape[1]}; the store holds {dim}-dimensional rows"
        )
    if not np.isfinite(m).all():
        return "multivector contains NaN or infinity"
    return None


def embedding_problems(embeddings: Sequence[Embedding], dim: int | None) -> list[str | None]:
    """``embedding_problem`` for a batch: dense vectors of one shape are checked in one pass.

    A writer checks every batch it sends; one numpy call for the batch instead of one per record
    keeps that check cheap.
    """
    out: list[str | None] = [None] * len(embeddings)
    stacked: list[int] = []
    for i, e in enumerate(embeddings):
        v = e.dense
        if (
            v is not None
            and isinstance(v, np.ndarray)
            and v.ndim == 1
            and _numeric(v)
            and (dim is None or v.shape[0] == dim)
        ):
            stacked.append(i)
        else:
            out[i] = embedding_problem(e, dim)
    lengths = {embeddings[i].as_dense().shape[0] for i in stacked}
    if len(lengths) > 1:  # no dimension to hold them to, and they differ: one by one
        for i in stacked:
            out[i] = embedding_problem(embeddings[i], dim)
    elif stacked:
        finite = np.isfinite(np.stack([embeddings[i].as_dense() for i in stacked])).all(axis=1)
        for i, ok in zip(stacked, finite, strict=True):
            if not ok:
                out[i] = "vector contains NaN or infinity"
    return out
