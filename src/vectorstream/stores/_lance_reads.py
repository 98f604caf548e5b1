"""Searching a LanceDB collection: the query each kind takes, and the in-memory snapshot.

A mixin of :class:`~vectorstream.stores.lancedb.LanceDBStore`, which holds the table, the
snapshot cache and what it knows of the table (the attributes declared here).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..types import EmbeddingKind, Hit
from ._common import as_query, check_k, check_range
from ._kinds import query_embedding
from ._lance_db import has_section_index, translated
from ._lance_filter import translate_where
from ._lance_search import VectorQuery
from ._lance_sparse import SparseQuery
from ._records import HIT_COLUMNS, SECTION_INDEX, hit_columns, hit_from_row
from ._resident import ResidentCache, ResidentSnapshot
from .base import Query, Where

# Seconds between a reader's checks whether an older table has gained ``section_index``.
SECTION_CHECK_TTL = 1.0


class LanceReads:
    """Search and range search over the table, by the collection's kind."""

    collection: str
    dim: int
    kind: EmbeddingKind
    nprobes: int
    refine_factor: int | None
    _table: Any
    _memory: ResidentCache
    _closed: bool
    _has_vector_index: bool | None
    _section_index: bool
    _section_checked: float

    @property
    def version(self) -> int:
        """The table version readers currently see (each upsert adds exactly one)."""
        with translated("read the table version"):
            return int(self._table.version)

    def has_vector_index(self) -> bool:
        if self._has_vector_index is None:
            with translated("list indexes"):
                self._has_vector_index = any(
                    tuple(ix.columns) == ("vector",) for ix in self._table.list_indices()
                )
        return self._has_vector_index

    def _query_vector(self, vector: Query) -> np.ndarray:
        q = as_query(vector, self.dim)
        if not np.any(q):
            raise ConfigError("query vector is all zeros: cosine similarity needs non-zero")
        return q

    def _hit_columns(self) -> list[str]:
        """The hit columns to read: all of them, or all but ``section_index`` (older tables)."""
        if not self._section_index:
            now = time.monotonic()
            if now - self._section_checked >= SECTION_CHECK_TTL:
                self._section_checked = now
                self._section_index = has_section_index(self._table)
        if self._section_index:
            return HIT_COLUMNS
        return [name for name in HIT_COLUMNS if name != SECTION_INDEX]

    def _query(self, base: float = 1.0) -> VectorQuery:
        return VectorQuery(
            self._table,
            self.collection,
            self.has_vector_index(),
            self.nprobes,
            self.refine_factor,
            tuple(self._hit_columns()),
            base,
        )

    def _sparse_query(self) -> SparseQuery:
        return SparseQuery(self._table, self.collection, tuple(self._hit_columns()))

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` best rows: by cosine similarity (``score = 1 - cosine distance``) in a
        dense collection, MaxSim in a multivector one, the dot product in a sparse one."""
        check_k(k)
        if self.kind != "dense":
            q = query_embedding(vector, self.kind, self.dim)
            if q.sparse is not None:
                return self._sparse_query().top(q.sparse, k, translate_where(where))
            rows = np.asarray(q.multivector)
            return self._query(float(rows.shape[0])).top(rows, k, translate_where(where))
        dense = self._query_vector(vector)
        snapshot = None if where else self._snapshot()
        if snapshot is not None:
            return _hits_from_memory(snapshot, *snapshot.top(dense, k))
        return self._query().top(dense, k, translate_where(where))

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        """Every row whose score is within ``beta`` of the best score (DIPR), at most ``limit``."""
        beta = check_range(beta, limit)
        if self.kind != "dense":
            q = query_embedding(vector, self.kind, self.dim)
            if q.sparse is not None:
                return self._sparse_query().within(q.sparse, beta, limit, translate_where(where))
            rows = np.asarray(q.multivector)
            pred = translate_where(where)
            return self._query(float(rows.shape[0])).within(rows, beta, limit, pred)
        dense = self._query_vector(vector)
        snapshot = None if where else self._snapshot()
        if snapshot is not None:
            return _hits_from_memory(snapshot, *snapshot.within(dense, beta, limit))
        return self._query().within(dense, beta, limit, translate_where(where))

    def answers_from_memory(self, where: Where | None = None) -> bool:
        """Whether a search now would be answered from the in-memory snapshot, without I/O.

        A server calls this to run such a search (well under a millisecond) on its event loop
        instead of handing it to a worker thread.
        """
        return self.kind == "dense" and not where and self._memory.fresh() is not None

    def _snapshot(self) -> ResidentSnapshot | None:
        """The in-memory snapshot of the current version, (re)loaded when allowed; else ``None``."""
        if self._closed or self.kind != "dense":
            return None

        def rows() -> int:
            with translated("count rows"):
                return int(self._table.count_rows())

        def load() -> Any:
            with translated(f"load {self.collection!r} into memory"):
                table = self._table.to_arrow()
                return table.select([*hit_columns(table.column_names), "vector", "model"])

        return self._memory.get(lambda: self.version, rows, load, self.dim * 4)


def _hits_from_memory(
    snapshot: ResidentSnapshot, indices: np.ndarray, scores: np.ndarray
) -> list[Hit]:
    rows = snapshot.records(indices)
    return [hit_from_row(row, float(s)) for row, s in zip(rows, scores.tolist(), strict=True)]


__all__ = ["LanceReads"]
