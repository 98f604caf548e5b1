"""An exact, in-memory snapshot of a small collection, for searches that must be fast.

A LanceDB query pays a fixed cost of a few milliseconds (planning, a hop to its own event loop,
a scan of the fragments) however small the table; a service answering one query at a time on a
small collection spends more on that than on embedding the query. A collection whose vectors and
hit columns fit a byte budget is instead held as one normalised float32 matrix plus an Arrow
table: a top-k is one matrix-vector product and an ``argpartition``, exact, in well under a
millisecond for tens of thousands of rows.

A snapshot belongs to one table version. ``ResidentCache`` decides when one is trusted without
asking the table (for ``ttl`` seconds after its version was last compared), reloaded (at most
every ``rebuild_every`` seconds, so a stream of commits by another process does not reload on
every version) or not kept at all (over the byte budget).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .._dipr import within

log = logging.getLogger("vectorstream.stores.resident")


@dataclass(frozen=True, eq=False)
class ResidentSnapshot:
    """Unit-norm vectors (rows align with ``rows``) and the columns a hit returns."""

    version: int
    vectors: np.ndarray  # (n, dim) float32, each row of norm 1
    rows: pa.Table  # the hit columns, without the vector
    models: frozenset[str]  # distinct values of the model column

    @classmethod
    def build(
        cls,
        version: int,
        table: pa.Table,
        vector_column: str = "vector",
        model_column: str = "model",
    ) -> ResidentSnapshot:
        column = table.column(vector_column).combine_chunks()
        dim = column.type.list_size
        flat = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        vectors = flat.reshape(len(column), dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # Stored vectors are never zero (upserts refuse them); guard anyway against a foreign table.
        vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
        models: frozenset[str] = frozenset()
        if model_column in table.column_names:
            import pyarrow.compute as pc

            values = pc.unique(table.column(model_column)).to_pylist()
            models = frozenset(str(m) for m in values if m is not None)
            table = table.drop_columns([model_column])
        rows = table.drop_columns([vector_column]).combine_chunks()
        return cls(version, np.ascontiguousarray(vectors, dtype=np.float32), rows, models)

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.rows.nbytes)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row to ``query`` (any non-zero norm)."""
        q = np.asarray(query, dtype=np.float32)
        return self.vectors @ (q / np.linalg.norm(q))

    def top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and scores of the ``k`` best rows, best first."""
        scores = self.scores(query)
        n = scores.shape[0]
        if k <= 0 or n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        order = part[np.argsort(-scores[part], kind="stable")]
        return order, scores[order]

    def within(self, query: np.ndarray, beta: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose score is within ``beta`` of the best (DIPR), best first, at most ``limit``."""
        scores = self.scores(query)
        if scores.shape[0] == 0 or limit <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        inside = np.flatnonzero(within(scores, scores.max(), beta))
        order = inside[np.argsort(-scores[inside], kind="stable")][:limit]
        return order, scores[order]

    def records(self, indices: np.ndarray) -> list[dict[str, object]]:
        """The chosen rows as Python values, column by column (no Arrow kernel per query)."""
        columns = [(name, self.rows.column(name)) for name in self.rows.column_names]
        return [{name: column[int(i)].as_py() for name, column in columns} for i in indices]


class ResidentCache:
    """The snapshot of one table, kept while it fits ``budget`` bytes and matches the version."""

    def __init__(
        self, budget: int, ttl: float, *, rebuild_every: float = 5.0, name: str = ""
    ) -> None:
        self.budget = budget
        self.ttl = ttl
        self.rebuild_every = rebuild_every
        self.name = name
        self.snapshot: ResidentSnapshot | None = None
        self._checked = 0.0  # when the snapshot's version was last compared with the table's
        self._built = -math.inf  # when the last snapshot was loaded
        self._too_big: tuple[int, int] | None = None  # (version, rows) found over the budget
        self._writes = 0  # invalidations so far: a load that overlapped one is not kept
        self._lock = threading.Lock()

    def fresh(self) -> ResidentSnapshot | None:
        """The snapshot, when it may be used without asking the table its version (no I/O)."""
        snapshot = self.snapshot
        if snapshot is not None and time.monotonic() - self._checked < self.ttl:
            return snapshot
        return None

    def invalidate(self) -> None:
        """Forget the snapshot (this process wrote to the table)."""
        self._writes += 1
        self.snapshot = None

    def get(
        self,
        version: Callable[[], int],
        rows: Callable[[], int],
        load: Callable[[], pa.Table],
        row_bytes: int,
    ) -> ResidentSnapshot | None:
        """The snapshot of the table's current version, (re)loaded when allowed; else ``None``.

        ``version``, ``rows`` and ``load`` ask the table; ``row_bytes`` estimates one row's
        vector, so a table far over the budget is never loaded to find out.
        """
        if self.budget <= 0:
            return None
        current = self.fresh()
        if current is not None:
            return current
        with self._lock:
            now = time.monotonic()
            writes = self._writes
            current = self.snapshot
            if current is not None and now - self._checked < self.ttl:
                return current
            v = version()
            self._checked = now
            if current is not None and current.version == v:
                return current
            self.snapshot = None
            if now - self._built < self.rebuild_every:
                return None  # a stream of writes: do not reload on every version
            too_big = self._too_big
            if too_big is not None and too_big[0] == v:
                return None
            n = rows()
            if n * row_bytes > self.budget or (too_big is not None and n >= too_big[1]):
                self._too_big = (v, n)
                return None
            snapshot = ResidentSnapshot.build(v, load())
            self._built = now
            if snapshot.nbytes > self.budget:
                self._too_big = (v, n)
                log.debug(
                    "%r needs %d bytes in memory, more than %d",
                    self.name,
                    snapshot.nbytes,
                    self.budget,
                )
                return None
            log.debug("%r (%d rows) searched from memory", self.name, len(snapshot))
            if writes == self._writes:  # else a write landed meanwhile: this may predate it
                self.snapshot = snapshot
            return snapshot


__all__ = ["ResidentCache", "ResidentSnapshot"]
