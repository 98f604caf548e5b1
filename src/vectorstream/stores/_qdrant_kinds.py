"""The embedding kinds in a Qdrant collection: how records' vectors and queries are sent.

* ``dense``: the unnamed vector, Cosine distance (the score is the cosine similarity).
* ``multivector``: the unnamed vector with a ``max_sim`` multivector comparator and the Cosine
  distance: the score is MaxSim, at least minus the number of query rows.
* ``sparse``: a named sparse vector ``sparse`` (no dense vector); the score is the dot product,
  which has no lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import EmbeddingKind, Record
from ._common import as_query
from ._kinds import query_embedding
from .base import Query

SPARSE_NAME = "sparse"  # the named sparse vector of a sparse collection
ALL_KINDS: frozenset[EmbeddingKind] = frozenset({"dense", "sparse", "multivector"})


def record_vectors(kind: EmbeddingKind, backend: Any, batch: Sequence[Record]) -> Any:
    """The batch's vectors in the form a collection of ``kind`` takes."""
    if kind == "sparse":
        sparse = [r.embedding.sparse for r in batch]
        return {
            SPARSE_NAME: [
                backend.sparse(sv.indices.tolist(), sv.values.tolist())
                for sv in sparse
                if sv is not None
            ]
        }
    if kind == "multivector":
        return [np.asarray(r.embedding.multivector, dtype=np.float32).tolist() for r in batch]
    return [np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist() for r in batch]


def query_form(
    kind: EmbeddingKind, dim: int | None, backend: Any, vector: Query
) -> tuple[Any, str | None, float]:
    """The query as Qdrant takes it, the vector name it searches, and the lowest score there is
    (a range bound at or below it bounds nothing)."""
    if kind == "dense":
        return as_query(vector, dim).tolist(), None, -1.0
    q = query_embedding(vector, kind, dim)
    if q.sparse is not None:
        sparse = backend.sparse(q.sparse.indices.tolist(), q.sparse.values.tolist())
        return sparse, SPARSE_NAME, -math.inf
    rows = np.asarray(q.multivector)
    return rows.tolist(), None, -float(rows.shape[0])


__all__ = ["ALL_KINDS", "SPARSE_NAME", "query_form", "record_vectors"]
