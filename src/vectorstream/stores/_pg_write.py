"""Writing records to a pgvector table: a binary ``COPY`` into a staging table, then a merge.

An upsert is one transaction: the records are copied into a temporary table shaped like the
collection's (``ON COMMIT DELETE ROWS``, so it is empty again after each commit and created once
per connection), then ``INSERT … SELECT … ON CONFLICT (id) DO UPDATE`` moves them over. COPY is
the fastest way into PostgreSQL; the merge makes the write idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..types import EmbeddingKind, Record
from ._pg_kinds import copy_layout, embedding_values


def copy_row(record: Record, kind: EmbeddingKind, dim: int, jsonb: Any) -> tuple[Any, ...]:
    """A record as one row of ``copy_layout(kind)``."""
    r = record
    vectors = embedding_values(r, kind, dim)
    return (
        r.id,
        vectors[0],
        r.text,
        r.source,
        r.page,
        r.start,
        r.end,
        r.chunk_index,
        list(r.headings),
        jsonb(dict(r.metadata)),
        r.model,
        r.section_index,
        *vectors[1:],
    )


def merge(
    conn: Any,
    sql: Any,
    jsonb: Any,
    table: str,
    kind: EmbeddingKind,
    dim: int,
    batch: Sequence[Record],
    *,
    staged: bool,
) -> None:
    """Upsert ``batch`` into ``table`` in one transaction (``staged``: this connection has made
    its staging table already)."""
    ident = sql.Identifier(table)
    stage = sql.Identifier(f"vs_stage_{table}")
    columns, types = copy_layout(kind)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with conn.transaction():
        if not staged:
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                ).format(stage, ident)
            )
        with conn.cursor() as cur:
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(stage, cols)
            with cur.copy(copy_sql) as copy:
                copy.set_types(list(types))
                for r in batch:
                    copy.write_row(copy_row(r, kind, dim, jsonb))
            updates = sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in columns[1:]
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (id) DO UPDATE SET {}"
                ).format(ident, cols, cols, stage, updates)
            )


__all__ = ["copy_row", "merge"]
