"""The DDL of a pgvector collection: reading an existing table's layout, creating a new one.

A table's kind and width are read from PostgreSQL's catalog (the ``embedding`` column's type and
``typmod``, whether a ``tokens`` column exists), so a table made by another process or an older
release opens as what it is. ``section_index`` came last: a table made before it gets it
(``ALTER TABLE … ADD COLUMN IF NOT EXISTS``, its rows 0) from a writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..types import EmbeddingKind
from ._pg_kinds import embedding_sql, extra_columns_sql, indexed

log = logging.getLogger("vectorstream.stores.pgvector")

HNSW_MAX_DIM = 2000  # pgvector's HNSW index holds `vector` columns of at most 2,000 dimensions


@dataclass(frozen=True, slots=True)
class StoredLayout:
    """What the catalog says of an existing table's vectors."""

    embedding_type: str  # format_type of the embedding column: "vector(16)", "sparsevec(30522)"
    dim: int | None  # its width, where the type carries one
    has_tokens: bool  # a multivector table's token rows


def regclass(sql: Any, conn: Any, table: str) -> str:
    """``table`` quoted as ``to_regclass`` takes it."""
    return str(sql.Identifier(table).as_string(conn))


def stored_layout(conn: Any, sql: Any, table: str) -> StoredLayout | None:
    """The layout of ``table``, or ``None`` when it has no ``embedding`` column (or no table)."""
    rows = conn.execute(
        "SELECT a.attname, a.atttypmod, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attname IN ('embedding', 'tokens') AND NOT a.attisdropped",
        [regclass(sql, conn, table)],
    ).fetchall()
    found = {r[0]: r for r in rows}
    row = found.get("embedding")
    if row is None:
        return None
    dim = int(row[1]) if row[1] and row[1] > 0 else None
    return StoredLayout(str(row[2]), dim, "tokens" in found)


def has_section_index(conn: Any, sql: Any, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attname = 'section_index' AND NOT a.attisdropped",
        [regclass(sql, conn, table)],
    ).fetchone()
    return row is not None


def add_section_index(conn: Any, sql: Any, table: str) -> None:
    """Give a table made before ``section_index`` existed the column: its rows are of section 0."""
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS section_index integer NOT NULL DEFAULT 0"
        ).format(sql.Identifier(table))
    )
    log.info("added the section_index column to table %r", table)


def create_table(
    conn: Any,
    sql: Any,
    table: str,
    kind: EmbeddingKind,
    dim: int,
    *,
    m: int,
    ef_construction: int,
) -> None:
    """Create ``table`` for ``kind`` embeddings of width ``dim`` with its indexes, in one
    transaction (``IF NOT EXISTS`` throughout: a concurrent creator's table is kept)."""
    ident = sql.Identifier(table)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, embedding "
                + embedding_sql(kind)
                + " NOT NULL, "
                "text text, source text, page integer, start_offset integer, end_offset integer, "
                "chunk_index integer, headings text[], metadata jsonb, model text, "
                "section_index integer NOT NULL DEFAULT 0" + extra_columns_sql(kind) + ")"
            ).format(ident, sql.Literal(int(dim)))
        )
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (source)").format(
                sql.Identifier(f"{table}_source_idx"), ident
            )
        )
        # A sparse collection has no index: its search is exact (see _pg_kinds).
        if indexed(kind) and dim <= HNSW_MAX_DIM:
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                    "WITH (m = {}, ef_construction = {})"
                ).format(
                    sql.Identifier(f"{table}_embedding_hnsw"),
                    ident,
                    sql.Literal(m),
                    sql.Literal(ef_construction),
                )
            )
        elif indexed(kind):
            log.warning("dimension %d > %d: no HNSW index, searches are exact", dim, HNSW_MAX_DIM)


__all__ = [
    "HNSW_MAX_DIM",
    "StoredLayout",
    "add_section_index",
    "create_table",
    "has_section_index",
    "stored_layout",
]
