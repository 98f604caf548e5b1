"""Upkeep of a LanceDB table: compaction, old versions, and indexes once it is large enough.

Every commit leaves a table version and a small fragment; a table written in many small commits
is read slower until its fragments are compacted. Versions older than ``cleanup_older_than``
are removed: readers refresh every second or so, so nobody reads them any more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._lance_db import translated

log = logging.getLogger("vectorstream.stores.lancedb")


@dataclass(frozen=True, slots=True)
class OptimizeReport:
    """What :meth:`LanceDBStore.optimize` did."""

    rows: int
    versions_before: int
    versions_after: int
    vector_index_built: bool
    scalar_indexes_built: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """When to build indexes: a cosine ANN index on ``vector`` (``vector_type`` of LanceDB) from
    ``vector_rows`` rows (``None``: the table has no vectors), BTREE indexes on ``scalar_columns``
    from ``scalar_rows`` rows."""

    vector_rows: int | None
    vector_type: str
    scalar_rows: int
    scalar_columns: Sequence[str]


def optimize_table(
    table: Any, name: str, policy: IndexPolicy, cleanup_older_than: timedelta
) -> OptimizeReport:
    """Build the indexes ``policy`` calls for, then compact and remove old versions."""
    with translated(f"optimize {name!r}"):
        versions_before = len(table.list_versions())
        rows = table.count_rows()
        indexed = {tuple(ix.columns) for ix in table.list_indices()}
        built_vector = False
        if (
            policy.vector_rows is not None
            and rows >= policy.vector_rows
            and ("vector",) not in indexed
        ):
            log.info("building a %s index on %d vectors of %r", policy.vector_type, rows, name)
            table.create_index(
                metric="cosine", vector_column_name="vector", index_type=policy.vector_type
            )
            built_vector = True
        built_scalar: list[str] = []
        if rows >= policy.scalar_rows:
            for column in policy.scalar_columns:
                if (column,) not in indexed:
                    table.create_scalar_index(column, index_type="BTREE")
                    built_scalar.append(column)
        # Last, so the versions that index creation committed are cleaned up too. It also
        # folds rows added since the indexes were built into them.
        table.optimize(cleanup_older_than=cleanup_older_than)
        versions_after = len(table.list_versions())
    return OptimizeReport(rows, versions_before, versions_after, built_vector, tuple(built_scalar))


__all__ = ["IndexPolicy", "OptimizeReport", "optimize_table"]
