"""Upkeep of a LanceDB table: compaction, old versions, and indexes once it is large enough.

Every commit leaves a table version and a small fragment; a table written in many small commits
is read slower until its fragments are compacted. Versions older than ``cleanup_older_than``
are removed: readers refresh every second or so, so nobody reads them any more.

Compaction decodes and re-encodes what it merges, and LanceDB's ``optimize()`` merges every
fragment under a million rows: its memory grows with the table. For dense rows that is a few KB a
row; a multivector row is tens of KB (a ColBERT chunk of 200 tokens × 128 floats is 100 KB), and
compacting a ×10 sample-corpus ColBERT table (190 MB in 12 fragments of ~16 MB) took 314 MiB on
top of the writer. A policy with ``compact_max_bytes`` therefore never compacts a table larger
than that whole when pylance is installed: fragments of at least ``SIZEABLE_FRAGMENT_BYTES``
(about what one commit of a window of multivector chunks writes) stay as they are, since merging
them buys reads little; the small ones between them are merged, ``compact_max_bytes`` at a time;
old versions and index updates go through pylance too. Without pylance, LanceDB's own optimize()
runs only while a quarter of the fragments are small; otherwise the upkeep waits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._lance_db import translated

log = logging.getLogger("vectorstream.stores.lancedb")

# A table above a policy's ``compact_max_bytes`` is compacted only while its fragments are smaller
# than this: one commit of 256 ColBERT chunks writes ~16 MB, 4,096 dense rows ~10 MB.
SIZEABLE_FRAGMENT_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class OptimizeReport:
    """What :meth:`LanceDBStore.optimize` did."""

    rows: int
    versions_before: int
    versions_after: int
    vector_index_built: bool
    scalar_indexes_built: tuple[str, ...]
    compacted: bool = True  # False: the table's fragments were left as they were (module doc)


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """When to build indexes: a cosine ANN index on ``vector`` (``vector_type`` of LanceDB) from
    ``vector_rows`` rows (``None``: the table has no vectors), BTREE indexes on ``scalar_columns``
    from ``scalar_rows`` rows."""

    vector_rows: int | None
    vector_type: str
    scalar_rows: int
    scalar_columns: Sequence[str]
    compact_max_bytes: int | None = None  # None: always compact (module doc)


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
        limit = policy.compact_max_bytes
        layout = None if limit is None else _layout(table)
        if limit is None or layout is None or not layout.too_large(limit):
            table.optimize(cleanup_older_than=cleanup_older_than)
            compacted = True
        else:
            compacted = _bounded_upkeep(table, name, layout, cleanup_older_than, limit)
        versions_after = len(table.list_versions())
    return OptimizeReport(
        rows, versions_before, versions_after, built_vector, tuple(built_scalar), compacted
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    total_bytes: int
    rows: int
    fragments: int
    p25_rows: int

    @property
    def row_bytes(self) -> float:
        return self.total_bytes / max(1, self.rows)

    def too_large(self, max_bytes: int) -> bool:
        """Whether compacting the whole table would hold more than ``max_bytes``."""
        return self.total_bytes > max_bytes and self.fragments > 1


def _layout(table: Any) -> _Layout:
    stats = table.stats()
    fragments = stats["fragment_stats"]
    return _Layout(
        int(stats["total_bytes"]),
        int(stats["num_rows"]),
        int(fragments["num_fragments"]),
        int(fragments["lengths"]["p25"]),
    )


def _bounded_upkeep(
    table: Any, name: str, layout: _Layout, older_than: timedelta, max_bytes: int
) -> bool:
    """Upkeep of a table too large to compact whole; whether any fragment was merged.

    With pylance: merge the small fragments only (at most ``max_bytes`` of them), remove old
    versions, update indexes. Without: LanceDB's own optimize() when a quarter of the fragments
    are small (reads gain from it, whatever it holds), else nothing now (module doc).
    """
    try:
        import lance  # noqa: F401  (the optional ``ray`` extra)
    except ImportError:
        if layout.p25_rows * layout.row_bytes < SIZEABLE_FRAGMENT_BYTES:
            table.optimize(cleanup_older_than=older_than)
            return True
        log.info(
            "left the fragments of %r as they are: the table is large and its fragments are "
            "sizeable; old versions and index updates wait for the next compaction (pylance "
            "would do them now)",
            name,
        )
        return False
    row_bytes = layout.row_bytes
    dataset = table.to_lance()
    sizeable = [
        f.fragment_id
        for f in dataset.get_fragments()
        if f.count_rows() * row_bytes >= SIZEABLE_FRAGMENT_BYTES
    ]
    # Sizeable fragments stay as they are and bound the merges; the rest is merged into
    # fragments of at most max_bytes, max_bytes of them per call.
    metrics = dataset.optimize.compact_files(
        excluded_fragment_ids=sizeable,
        target_rows_per_fragment=max(1, int(max_bytes / row_bytes)),
        max_source_bytes=max_bytes,
        num_threads=1,
    )
    table.checkout_latest()
    dataset = table.to_lance()
    dataset.cleanup_old_versions(older_than=older_than)
    dataset.optimize.optimize_indices()
    table.checkout_latest()
    log.debug(
        "upkeep of %r: %d sizeable fragments left as they are, %d small ones merged",
        name,
        len(sizeable),
        metrics.fragments_removed,
    )
    return bool(metrics.fragments_removed)


__all__ = ["SIZEABLE_FRAGMENT_BYTES", "IndexPolicy", "OptimizeReport", "optimize_table"]
