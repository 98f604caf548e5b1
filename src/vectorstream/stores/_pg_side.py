"""Side tables of a pgvector collection: plain PostgreSQL tables beside the collection's table.

Side table ``name`` of table ``docs`` is the table ``docs__vs_name`` (``key text PRIMARY KEY, doc
jsonb``; names past PostgreSQL's 63-byte identifier limit are shortened with a hash). A
``put_many`` is one ``INSERT … ON CONFLICT (key) DO UPDATE`` statement and a ``delete_many`` one
``DELETE``, each committed before it returns. ``jsonb`` keeps numbers as ``numeric``, so integers
of any size read back exactly. ``scan`` pages by key, so it never holds a transaction open while
its caller works through the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ._common import doc_json
from ._side_collections import side_collection_name
from .base import Doc

PG_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)
PAGE = 1000  # keys per statement, rows per scan page

Run = Callable[[str, Callable[[Any], Any]], Any]  # the store's run(action, fn(conn))


def pg_side_table_name(table: str, name: str) -> str:
    return side_collection_name(table, name, max_bytes=PG_NAME_BYTES)


class PgSideTable:
    """One side table, run through the store's connection (``run`` reconnects and translates)."""

    def __init__(self, run: Run, sql: Any, table: str, owner: str) -> None:
        self._run = run
        self._sql = sql
        self.name = table
        self._owner = owner
        self._ident = sql.Identifier(table)
        self._exists = False

    def _present(self, *, create: bool) -> bool:
        if self._exists:
            return True
        sql = self._sql

        def look(conn: Any) -> bool:
            row = conn.execute("SELECT to_regclass(%s)", [self._ident.as_string(conn)]).fetchone()
            return row is not None and row[0] is not None

        found = bool(self._run("look for a side table", look))
        if not found and create:
            create_sql = sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, doc jsonb NOT NULL)"
            ).format(self._ident)
            comment = sql.SQL("COMMENT ON TABLE {} IS {}").format(
                self._ident,
                sql.Literal(f"vectorstream side table of {self._owner!r}, not a collection"),
            )

            def make(conn: Any) -> None:
                # Two writers creating it at once: the loser's CREATE fails on the catalog's
                # unique index, and the table is there all the same.
                try:
                    with conn.transaction():
                        conn.execute(create_sql)
                        conn.execute(comment)
                except Exception:
                    if not look(conn):
                        raise

            self._run("create a side table", make)
            found = True
        self._exists = found
        return found

    def _exec(self, action: str, query: Any, args: list[Any], *, fetch: bool = False) -> Any:
        def run(conn: Any) -> Any:
            cur = conn.execute(query, args)
            return cur.fetchall() if fetch else None

        return self._run(action, run)

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        wanted = list(dict.fromkeys(keys))
        if not wanted or not self._present(create=False):
            return out
        query = self._sql.SQL("SELECT key, doc FROM {} WHERE key = ANY(%s)").format(self._ident)
        for i in range(0, len(wanted), PAGE):
            rows = self._exec("read a side table", query, [wanted[i : i + PAGE]], fetch=True)
            out.update((k, d) for k, d in rows)
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        keys = list(docs)
        texts = [doc_json(k, docs[k]) for k in keys]
        self._present(create=True)
        query = self._sql.SQL(
            "INSERT INTO {} (key, doc) SELECT k, d::jsonb FROM unnest(%s::text[], %s::text[]) "
            "AS u(k, d) ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc"
        ).format(self._ident)
        for i in range(0, len(keys), PAGE):
            args = [keys[i : i + PAGE], texts[i : i + PAGE]]
            self._exec("write side table rows", query, args)

    def delete_many(self, keys: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(keys))
        if not wanted or not self._present(create=False):
            return
        query = self._sql.SQL("DELETE FROM {} WHERE key = ANY(%s)").format(self._ident)
        for i in range(0, len(wanted), PAGE):
            self._exec("delete side table rows", query, [wanted[i : i + PAGE]])

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        first = self._sql.SQL("SELECT key, doc FROM {} ORDER BY key LIMIT %s").format(self._ident)
        after = self._sql.SQL(
            "SELECT key, doc FROM {} WHERE key > %s ORDER BY key LIMIT %s"
        ).format(self._ident)
        last: str | None = None
        while True:
            if last is None:
                rows = self._exec("scan a side table", first, [PAGE], fetch=True)
            else:
                rows = self._exec("scan a side table", after, [last, PAGE], fetch=True)
            yield from ((k, d) for k, d in rows)
            if len(rows) < PAGE:
                return
            last = rows[-1][0]


__all__ = ["PgSideTable", "pg_side_table_name"]
