"""Searches of a pgvector table as SQL: the filter as a ``WHERE`` clause, the nearest-rows query,
and its rows as ``Hit``s.

Columns (``source``, ``model``, ``page``, …) are compared with ``= ANY(%s)``; a
``metadata.<key>`` clause is a JSON containment (``metadata @> %s``), which compares JSON values
with their types and can use a GIN index. A query wider than the session's ``hnsw.ef_search``
raises it for that query only (``SET LOCAL`` in its own transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Hit
from ._common import where_items
from ._pg_conn import EF_SEARCH_MAX
from .base import Where

HIT_COLUMNS = (
    "id",
    "text",
    "source",
    "page",
    "start_offset",
    "end_offset",
    "chunk_index",
    "headings",
    "metadata",
    "section_index",
)
SCORE = len(HIT_COLUMNS)  # where a row's score is, after the hit columns
EXTRA = SCORE + 1  # where the first of the extra columns asked for is


def where_sql(
    sql: Any, jsonb: Any, where: Where | None, first: Any = None
) -> tuple[Any, list[Any]]:
    """The filter as a ``WHERE`` clause and its parameters (``first``: one more condition,
    already SQL)."""
    parts: list[Any] = [] if first is None else [first]
    params: list[Any] = []
    for key, values in where_items(where):
        if key.startswith("metadata."):
            # Containment (@>) compares JSON values with their types and can use a GIN index.
            ors = [sql.SQL("metadata @> %s") for _ in values]
            params.extend(jsonb({key[9:]: v}) for v in values)
            parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(ors)))
        else:
            parts.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(key)))
            params.append(list(values))
    if not parts:
        return sql.SQL(""), []
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(parts), params


def hit_columns(sql: Any, section_index: bool) -> list[Any]:
    """The ``HIT_COLUMNS`` as SQL, for a table with or without the ``section_index`` column."""
    columns: list[Any] = [sql.Identifier(c) for c in HIT_COLUMNS]
    if not section_index:
        # A reader of a table made before the column: read it through the row's JSON, which
        # gives 0 while the column is missing and its value once a writer has added it.
        columns[HIT_COLUMNS.index("section_index")] = sql.SQL(
            "COALESCE((to_jsonb(t) ->> 'section_index')::integer, 0)"
        )
    return columns


@dataclass(frozen=True, slots=True)
class Nearest:
    """One nearest-rows query, ready to run: its SQL, its arguments, the beam it needs."""

    query: Any
    args: list[Any]
    ef: int  # hnsw.ef_search for this query


def nearest(
    sql: Any,
    jsonb: Any,
    table: str,
    *,
    section_index: bool,
    score: str,
    order: str,
    q: Any,
    limit: int,
    where: Where | None,
    ef_search: int,
    positive: bool = False,
    columns: Sequence[str] = (),
) -> Nearest:
    """Rows of the hit columns, then ``score``, then ``columns``, ordered by ``order``.

    ``score`` and ``order`` are SQL with one ``%s`` for the query each; with ``positive``
    only rows whose ``order`` value is negative (a positive inner product) are kept.
    """
    first = sql.SQL(order + " < 0") if positive else None
    clause, params = where_sql(sql, jsonb, where, first)
    extra = [sql.Identifier(c) for c in columns]
    query = sql.SQL(
        "SELECT {}, " + score + " AS score{} FROM {} AS t {} ORDER BY " + order + " LIMIT %s"
    ).format(
        sql.SQL(", ").join(hit_columns(sql, section_index)),
        sql.SQL("").join(sql.SQL(", ") + c for c in extra),
        sql.Identifier(table),
        clause,
    )
    args = [q, *([q] if first is not None else []), *params, q, limit]
    return Nearest(query, args, min(EF_SEARCH_MAX, max(ef_search, limit)))


def run_nearest(conn: Any, sql: Any, search: Nearest, *, session_ef: int, indexed: bool) -> Any:
    """The rows of ``search``, with a wider beam than the session's for this query only."""
    if search.ef == session_ef or not indexed:
        return conn.execute(search.query, search.args).fetchall()
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(search.ef)))
        return conn.execute(search.query, search.args).fetchall()


def hit_of_row(row: Any, score: float) -> Hit:
    """A hit from a row of the ``HIT_COLUMNS``."""
    return Hit(
        id=row[0],
        text=row[1] or "",
        source=row[2] or "",
        page=row[3],
        start=row[4] or 0,
        end=row[5] or 0,
        chunk_index=row[6] or 0,
        headings=tuple(row[7] or ()),
        metadata=row[8] or {},
        section_index=row[9] or 0,
        score=score,
    )


__all__ = [
    "EXTRA",
    "HIT_COLUMNS",
    "SCORE",
    "Nearest",
    "hit_columns",
    "hit_of_row",
    "nearest",
    "run_nearest",
    "where_sql",
]
