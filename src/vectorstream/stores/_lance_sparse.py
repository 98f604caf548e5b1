"""Sparse search on a LanceDB table: exact dot products, scored in Python over the rows.

LanceDB has no sparse vectors, so a sparse collection keeps each record's term ids and weights in
its ``vector`` struct column (``_records``) and a search scans them: the rows passing the filter
(LanceDB evaluates its SQL part) are read ``SCAN_ROWS`` at a time, only their ids and ``vector``
columns, and each batch is scored with numpy against the query's terms; the ``k`` best are kept
and only their hit columns are read at the end.

The cost: every search reads every stored term of every row that passes the filter, so its time
grows linearly with the collection (and a filter narrows it); memory holds one batch and the ``k``
best, never the collection. That suits collections of up to some hundred thousand chunks; for
larger sparse collections use a store with a sparse index (Qdrant, Milvus, pgvector: see
docs/stores.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..types import Hit, SparseVector
from ._kinds import sparse_scores, top_order
from ._lance_db import translated
from ._lance_filter import Predicate, sql_in
from ._records import hit_from_row
from .base import dipr_cut, matches

SCAN_ROWS = 16_384  # rows scored per numpy pass: bounds the memory of a search


@dataclass(frozen=True, slots=True)
class SparseQuery:
    """How to search one sparse table now: its handle and the hit columns it has."""

    table: Any
    collection: str
    columns: tuple[str, ...]

    def top(self, q: SparseVector, k: int, pred: Predicate) -> list[Hit]:
        """The ``k`` rows with the highest positive dot product that pass the predicate."""
        with translated(f"search {self.collection!r}"):
            ids, scores = self._best(q, k, pred)
            return self._hits(ids, scores)

    def within(self, q: SparseVector, beta: float, limit: int, pred: Predicate) -> list[Hit]:
        """Every row within ``beta`` of the best score (DIPR), at most ``limit``: the best
        ``limit`` rows hold them all, so they are scored and cut."""
        return dipr_cut(self.top(q, limit, pred), beta)[:limit]

    def _best(self, q: SparseVector, k: int, pred: Predicate) -> tuple[list[str], np.ndarray]:
        names = ["id", "vector", *(["metadata"] if pred.post else [])]
        query = self.table.search().select(names).limit(None)
        if pred.sql:
            query = query.where(pred.sql)
        best_ids: list[str] = []
        best = np.zeros(0)
        for batch in query.to_batches(SCAN_ROWS):
            scores = _batch_scores(q, batch.column("vector"))
            floor = best[-1] if len(best) >= k else 0.0
            chosen = np.flatnonzero(scores > floor)
            if not chosen.size:
                continue
            if pred.post:  # clauses SQL may answer loosely: checked here, on candidates only
                meta = batch.column("metadata")
                chosen = np.array(
                    [i for i in chosen.tolist() if _keeps(meta[i].as_py(), pred)], dtype=np.int64
                )
                if not chosen.size:
                    continue
            ids = batch.column("id").take(pa.array(chosen)).to_pylist()
            merged_ids = best_ids + ids
            merged = np.concatenate([best, scores[chosen]])
            order = top_order(merged, k)
            best_ids = [merged_ids[i] for i in order.tolist()]
            best = merged[order]
        return best_ids, best

    def _hits(self, ids: list[str], scores: np.ndarray) -> list[Hit]:
        if not ids:
            return []
        rows = (
            self.table.search()
            .where(sql_in("id", ids))
            .select(list(self.columns))
            .limit(None)
            .to_arrow()
            .to_pylist()
        )
        by_id = {row["id"]: row for row in rows}
        return [
            hit_from_row(by_id[i], float(s))
            for i, s in zip(ids, scores.tolist(), strict=True)
            if i in by_id  # a row deleted between the scan and this read is left out
        ]


def _batch_scores(q: SparseVector, column: Any) -> np.ndarray:
    """The dot product of ``q`` with every row of a batch's ``vector`` struct column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    indices, values, _ = column.flatten()  # flatten() honours the batch's slice offset
    lengths = pc.fill_null(pc.list_value_length(indices), 0).to_numpy(zero_copy_only=False)
    flat_idx = indices.flatten().to_numpy(zero_copy_only=False)
    flat_val = values.flatten().to_numpy(zero_copy_only=False)
    return sparse_scores(q, flat_idx, flat_val, lengths.astype(np.int64))


def _keeps(raw: Any, pred: Predicate) -> bool:
    metadata = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    return matches({"metadata": metadata}, pred.post)


__all__ = ["SCAN_ROWS", "SparseQuery"]
