"""An exact, in-memory snapshot of a small collection, for searches that must be fast.

A LanceDB query pays a fixed cost of a few milliseconds (planning, a hop to its own event loop,
a scan of the fragments) however small the table; a service answering one query at a time on a
small collection spends more on that than on embedding the query. A collection whose vectors and
hit columns fit a byte budget is instead held as one normalised float32 matrix plus an Arrow
table: a top-k is one matrix-vector product and an ``argpartition``, exact, in well under a
millisecond for tens of thousands of rows.

The snapshot belongs to one table version; the store decides when it is stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


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
        inside = np.flatnonzero(scores >= scores.max() - beta)
        order = inside[np.argsort(-scores[inside], kind="stable")][:limit]
        return order, scores[order]

    def records(self, indices: np.ndarray) -> list[dict[str, object]]:
        """The chosen rows as Python values, column by column (no Arrow kernel per query)."""
        columns = [(name, self.rows.column(name)) for name in self.rows.column_names]
        return [{name: column[int(i)].as_py() for name, column in columns} for i in indices]


__all__ = ["ResidentSnapshot"]
