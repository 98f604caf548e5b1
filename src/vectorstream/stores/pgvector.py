"""PostgreSQL + pgvector adapter (psycopg 3).

One table per collection, in pgvector's usual shape so ``psql`` and any SQL tool read it::

    id text PRIMARY KEY, embedding vector(dim), text text, source text, page integer,
    start_offset integer, end_offset integer, chunk_index integer, headings text[],
    metadata jsonb, model text, section_index integer NOT NULL DEFAULT 0

with an HNSW index (``vector_cosine_ops``) and a b-tree on ``source``. An upsert is one
transaction: a binary ``COPY`` into a temporary staging table, then ``INSERT … SELECT … ON
CONFLICT (id) DO UPDATE`` — COPY is the fastest way into PostgreSQL, the merge makes it
idempotent. Scores are cosine similarities (``1 - (embedding <=> query)``).

A table holds one embedding kind (``open(..., kind=...)``, read back from its columns after):
dense as above, ``sparse`` in a ``sparsevec`` column (exact inner product), ``multivector`` as a
pooled vector plus the token rows, ranked by exact MaxSim over pooled-vector candidates
(``_pg_kinds``).

The connection and its error translation are ``_pg_conn``; the DDL ``_pg_schema``; the COPY and
merge of an upsert ``_pg_write``; search SQL and its rows as hits ``_pg_query``.

``section_index`` came last: a table made before it gets it (``ALTER TABLE … ADD COLUMN IF NOT
EXISTS``, its rows 0) when a store opens it for writing. A reader (``mode="r"``) alters nothing
and reads such a table's rows as section 0.

Side tables (the manifest) are tables ``<table>__vs_<name>`` (``key text PRIMARY KEY, doc jsonb``)
beside the collection's (``_pg_side``). Readers (``mode="r"``) get side tables that refuse writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._vectors import embedding_width
from ..errors import ConfigError
from ..types import EmbeddingKind, Hit, Record
from ._common import adaptive_range, as_query, check_delete, check_k, last_wins, pop_mode, require
from ._kinds import check_kind, maxsim, pooled, query_embedding, settle_kind, top_order
from ._pg_conn import close_quietly, connect, translate
from ._pg_kinds import candidates, indexed, sparse_query, stored_kind, token_rows
from ._pg_query import EXTRA, SCORE, hit_of_row, nearest, run_nearest
from ._pg_schema import add_section_index, create_table, has_section_index, stored_layout
from ._pg_side import PgSideTable, pg_side_table_name
from ._pg_write import merge
from ._records import kind_problems, rejected_error, split_rejected
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from .base import Query, SideTable, StoreCapabilities, Where


class PgVectorStore:
    """A pgvector table as a ``VectorStore``. Open with ``PgVectorStore.open(uri, table, dim=…)``."""

    capabilities = StoreCapabilities(
        kinds=frozenset({"dense", "sparse", "multivector"}), filters=True, range_search=True
    )

    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        dim: int | None = None,
        kind: str | None = None,
        ef_search: int = 100,
        m: int = 16,
        ef_construction: int = 64,
        connect_timeout: float = 10.0,
        rerank_factor: int = 10,
    ) -> None:
        self._psycopg = require("psycopg", "psycopg[binary]", "pgvector")
        require("pgvector.psycopg", "pgvector", "pgvector")
        refuse_side_marker(collection, "pgvector")
        if isinstance(rerank_factor, bool) or not isinstance(rerank_factor, int):
            raise ConfigError(f"rerank_factor must be an integer >= 1, got {rerank_factor!r}")
        if rerank_factor < 1:
            raise ConfigError(f"rerank_factor must be an integer >= 1, got {rerank_factor!r}")
        self.uri = uri
        self.collection = collection
        self.dim = dim
        # The kind asked for; the table's own once it exists (read in _ensure_table).
        self._wanted: EmbeddingKind | None = None if kind is None else check_kind(kind)
        self.kind: EmbeddingKind = self._wanted or "dense"
        self.rerank_factor = rerank_factor
        self.ef_search = ef_search
        self.m = m
        self.ef_construction = ef_construction
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._staged = False
        self._iterative_scan = False
        self._table_ready = False
        # Whether the table has section_index (one made before it, opened read-only, has not).
        self._section_index = True
        self.readonly = False  # mode="r": side tables refuse writes (the server guards the rest)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> PgVectorStore:
        """Connect, and create the table when ``dim`` is given and it does not exist yet."""
        mode = pop_mode(options)
        store = cls(uri, collection, dim=dim, **options)
        store.readonly = mode == "r"
        store._connection()
        return store

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        session = connect(
            self._psycopg,
            self.uri,
            ef_search=self.ef_search,
            connect_timeout=self.connect_timeout,
        )
        self._iterative_scan = session.iterative_scan
        self._conn = session.conn
        self._staged = False
        self._table_ready = False
        self._ensure_table(self.dim)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            close_quietly(self._psycopg, self._conn)
        self._conn = None

    def _run(self, action: str, fn: Any) -> Any:
        """Run ``fn(conn)``; translate errors and drop a broken connection so the next call reconnects."""
        conn = self._connection()
        try:
            return fn(conn)
        except self._psycopg.Error as exc:
            # A failed transaction rolled back the staging table's creation with it.
            self._staged = False
            if isinstance(exc, self._psycopg.OperationalError) or conn.closed or conn.broken:
                self._drop_connection()
            raise translate(exc, action) from exc

    def _ensure_table(self, dim: int | None) -> None:
        """Read the table's kind and width, or create it when ``dim`` is known (``_pg_schema``)."""
        if self._table_ready:
            return
        sql = self._psycopg.sql
        conn = self._conn
        try:
            layout = stored_layout(conn, sql, self.collection)
            if layout is not None:
                self.kind = settle_kind(
                    f"table {self.collection!r}",
                    stored_kind(layout.embedding_type, layout.has_tokens),
                    self._wanted,
                )
                stored = layout.dim
                if dim is not None and stored is not None and stored != dim:
                    raise ConfigError(
                        f"table {self.collection!r} holds vectors of dimension {stored}, not {dim}; "
                        "use another collection or the matching model"
                    )
                self.dim = stored
                self._section_index = has_section_index(conn, sql, self.collection)
                if not self._section_index and not self.readonly:
                    # A table made before section_index existed: its rows are of section 0.
                    add_section_index(conn, sql, self.collection)
                    self._section_index = True
                self._table_ready = True
                return
            if dim is None:
                return  # created by the first upsert, which knows the dimension
            create_table(
                conn,
                sql,
                self.collection,
                self.kind,
                dim,
                m=self.m,
                ef_construction=self.ef_construction,
            )
        except self._psycopg.Error as exc:
            raise translate(exc, f"create table {self.collection!r}") from exc
        self.dim = dim
        self._section_index = True
        self._table_ready = True

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the table's (and, for sparse
        and multivector tables, invalid ones) are set aside: the others are written, then
        ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        self._connection()
        batch = last_wins(records)
        # Dense vectors are checked by PostgreSQL itself.
        batch, rejected = split_rejected(
            batch, kind_problems(batch, self.dim, self.kind, nonzero=True)
        )
        if batch and not self._table_ready:
            self._ensure_table(embedding_width(batch[0].embedding))
        if batch:
            self._run("upsert records", lambda conn: self._merge(conn, batch))
        if rejected:
            raise rejected_error(rejected, len(records), f"table {self.collection!r}")

    def _merge(self, conn: Any, batch: list[Record]) -> None:
        psycopg = self._psycopg
        dim = int(self.dim or 0)
        merge(
            conn,
            psycopg.sql,
            psycopg.types.json.Jsonb,
            self.collection,
            self.kind,
            dim,
            batch,
            staged=self._staged,
        )
        self._staged = True

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        check_delete(ids, source)
        if not self._table_exists():
            return 0
        sql = self._psycopg.sql
        table = sql.Identifier(self.collection)
        if ids is not None:
            query = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(table)
            params: list[Any] = [list(ids)]
        else:
            query = sql.SQL("DELETE FROM {} WHERE source = %s").format(table)
            params = [source]
        return int(self._run("delete records", lambda conn: conn.execute(query, params).rowcount))

    # -- reads -------------------------------------------------------------------------------

    def _table_exists(self) -> bool:
        self._connection()
        return self._table_ready

    def _nearest(
        self,
        score: str,
        order: str,
        q: Any,
        limit: int,
        where: Where | None,
        *,
        positive: bool = False,
        columns: Sequence[str] = (),
    ) -> list[Any]:
        """Rows of the hit columns, then ``score``, then ``columns`` (``_pg_query.nearest``)."""
        sql = self._psycopg.sql
        search = nearest(
            sql,
            self._psycopg.types.json.Jsonb,
            self.collection,
            section_index=self._section_index,
            score=score,
            order=order,
            q=q,
            limit=limit,
            where=where,
            ef_search=self.ef_search,
            positive=positive,
            columns=columns,
        )

        def run(conn: Any) -> list[Any]:
            return list(
                run_nearest(
                    conn, sql, search, session_ef=self.ef_search, indexed=indexed(self.kind)
                )
            )

        return list(self._run("search", run))

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` best rows: cosine similarity (dense), inner product (sparse) or MaxSim
        over pooled-vector candidates (multivector; see ``_pg_kinds``)."""
        check_k(k)
        if self.kind == "dense":
            q: Any = as_query(vector, self.dim)
            if not self._table_exists():
                return []
            rows = self._nearest("1 - (embedding <=> %s)", "embedding <=> %s", q, k, where)
            return [hit_of_row(row, float(row[SCORE])) for row in rows]
        e = query_embedding(vector, self.kind, self.dim)
        if not self._table_exists():
            return []
        if e.sparse is not None:
            q = sparse_query(e.sparse.indices, e.sparse.values, int(self.dim or e.sparse.dim))
            order = "(embedding <#> %s)"
            rows = self._nearest("-" + order, order, q, k, where, positive=True)
            return [hit_of_row(row, float(row[SCORE])) for row in rows]
        query_rows = np.asarray(e.multivector)
        n = candidates(k, self.rerank_factor)
        rows = self._nearest(
            "1 - (embedding <=> %s)",
            "embedding <=> %s",
            pooled(query_rows),
            n,
            where,
            columns=("tokens",),
        )
        dim = int(self.dim or query_rows.shape[1])
        scores = maxsim(query_rows, [token_rows(row[EXTRA], dim) for row in rows])
        return [hit_of_row(rows[i], float(scores[i])) for i in top_order(scores, k).tolist()]

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        return adaptive_range(lambda k: self.search(vector, k, where), beta, limit)

    def ids(self, source: str | None = None) -> set[str]:
        if not self._table_exists():
            return set()
        sql = self._psycopg.sql
        table = sql.Identifier(self.collection)
        if source is None:
            query, params = sql.SQL("SELECT id FROM {}").format(table), []
        else:
            query, params = sql.SQL("SELECT id FROM {} WHERE source = %s").format(table), [source]
        rows = self._run("list ids", lambda conn: conn.execute(query, params).fetchall())
        return {row[0] for row in rows}

    def count(self) -> int:
        if not self._table_exists():
            return 0
        query = self._psycopg.sql.SQL("SELECT count(*) FROM {}").format(
            self._psycopg.sql.Identifier(self.collection)
        )
        return int(self._run("count records", lambda conn: conn.execute(query).fetchone()[0]))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: the table ``<table>__vs_<name>`` beside this one."""
        table = PgSideTable(
            self._run,
            self._psycopg.sql,
            pg_side_table_name(self.collection, name),
            self.collection,
        )
        if self.readonly:
            return ReadOnlySideTable(table, f"PostgreSQL table {self.collection!r}")
        return table

    def flush(self) -> None:
        """Nothing to do: every upsert is its own committed transaction."""

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self) -> PgVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PgVectorStore"]
