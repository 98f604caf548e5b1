"""Vector queries on a LanceDB table: top-k and DIPR range, with the translated filters.

Scores are cosine similarities (``1 - cosine distance``), higher is better; for a multivector
collection, MaxSim (``n - distance`` for a query of ``n`` rows: LanceDB's multivector distance
is the sum over query rows of ``1 - best cosine``). Sparse collections are searched by
``_lance_sparse``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._dipr import threshold, within
from ..types import Hit
from ._lance_db import translated
from ._lance_filter import Predicate
from ._records import HIT_COLUMNS, hits_from_arrow
from .base import dipr_cut

# The first page of a range query: most DIPR answers are small, so fetch this many and only
# run the second, distance-bounded query when the whole page is still within beta.
RANGE_FIRST_PAGE = 64


def _background_loop() -> Any:
    """LanceDB's own event-loop thread, which its sync API hops to several times per query.

    A vector query through the sync builder crosses to that thread three times (schema for the
    builder, schema for the projection, execution); building the async query inside one
    coroutine crosses once. On 2 busy cores each crossing is a context switch that costs about
    as much as the search itself (benchmarks/lancedb_query.py). Private API: when a LanceDB
    release moves it, searches fall back to the public sync builder.
    """
    try:
        from lancedb.background_loop import LOOP
    except ImportError:
        return None
    return LOOP if callable(getattr(LOOP, "run", None)) else None


_ONE_HOP: Any = _background_loop()


@dataclass(frozen=True, slots=True)
class VectorQuery:
    """How to query one table now: its handle and the ANN settings in force."""

    table: Any
    collection: str
    indexed: bool  # whether the table has an ANN index on ``vector``
    nprobes: int
    refine_factor: int | None
    # The hit columns the table has: one made before ``section_index`` lacks that column.
    columns: tuple[str, ...] = tuple(HIT_COLUMNS)
    # score = base - distance: 1 for a dense query, its number of rows for a multivector one.
    base: float = 1.0

    def fetch(
        self, q: np.ndarray, limit: int, sql: str | None, max_distance: float | None
    ) -> list[Hit]:
        """One LanceDB query: the ``limit`` nearest rows passing ``sql``."""
        # Refining re-ranks candidates with exact vectors; without it LanceDB reports the
        # index's own distance (squared L2 of normalised vectors), not cosine distance.
        refine = max(1, self.refine_factor or 1)

        def shape(query: Any) -> Any:
            # The same calls exist on the sync builder and the async query.
            query = query.distance_type("cosine")
            if self.indexed:
                query = query.nprobes(self.nprobes).refine_factor(refine)
            if sql:
                query = query.where(sql)  # a prefilter: filter first, then rank
            if max_distance is not None:
                query = query.distance_range(upper_bound=max_distance)
            return query.limit(limit).select([*self.columns, "_distance"])

        with translated(f"search {self.collection!r}"):
            if _ONE_HOP is not None and hasattr(self.table, "_table"):
                inner = self.table._table

                async def run() -> pa.Table:
                    return await shape(inner.query().nearest_to(q).column("vector")).to_arrow()

                table = _ONE_HOP.run(run())
            else:
                table = shape(self.table.search(q, vector_column_name="vector")).to_arrow()
            return hits_from_arrow(table, self.base)

    def top(
        self, q: np.ndarray, k: int, pred: Predicate, max_distance: float | None = None
    ) -> list[Hit]:
        """Top-``k`` rows passing the predicate, over-fetching while the Python check drops rows."""
        fetch = k
        while True:
            raw = self.fetch(q, fetch, pred.sql, max_distance)
            hits = [h for h in raw if pred.keeps(h)]
            if len(hits) >= k or len(raw) < fetch:
                return hits[:k]
            fetch *= 4

    def within(self, q: np.ndarray, beta: float, limit: int, pred: Predicate) -> list[Hit]:
        """Every row passing the predicate within ``beta`` of the best score, at most ``limit``."""
        page = min(limit, RANGE_FIRST_PAGE)
        first = self.top(q, page, pred)
        if not first:
            return []
        best = first[0].score
        if len(first) < page or not within(first[-1].score, best, beta):
            return dipr_cut(first, beta)[:limit]
        # The first page is all inside the range: fetch up to ``limit``. Without an ANN index
        # LanceDB can bound the exact cosine distance itself (a hair of slack: dipr_cut makes
        # the exact cut); an index applies the bound to its own approximate distance, so there
        # the top ``limit`` are fetched and cut here.
        bound = None if self.indexed else self.base - threshold(best, beta) + 1e-6
        return dipr_cut(self.top(q, limit, pred, max_distance=bound), beta)[:limit]


__all__ = ["RANGE_FIRST_PAGE", "VectorQuery"]
