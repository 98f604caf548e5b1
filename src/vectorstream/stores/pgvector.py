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

``section_index`` came last: a table made before it gets it (``ALTER TABLE … ADD COLUMN IF NOT
EXISTS``, its rows 0) when a store opens it for writing. A reader (``mode="r"``) alters nothing
and reads such a table's rows as section 0.

Side tables (the manifest) are tables ``<table>__vs_<name>`` (``key text PRIMARY KEY, doc jsonb``)
beside the collection's (``_pg_side``). Readers (``mode="r"``) get side tables that refuse writes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._vectors import embedding_width
from ..errors import ConfigError, RecordRejectedError, StoreError, StoreUnavailableError
from ..types import EmbeddingKind, Hit, Record
from ._common import adaptive_range, as_query, check_k, last_wins, pop_mode, require, where_items
from ._kinds import check_kind, maxsim, pooled, query_embedding, settle_kind, top_order
from ._pg_kinds import (
    candidates,
    copy_layout,
    embedding_sql,
    embedding_values,
    extra_columns_sql,
    indexed,
    sparse_query,
    stored_kind,
    token_rows,
)
from ._pg_side import PgSideTable, pg_side_table_name
from ._records import split_rejected, vector_problems
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from .base import Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.pgvector")

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
HNSW_MAX_DIM = 2000  # pgvector's HNSW index holds `vector` columns of at most 2,000 dimensions


def _translate(exc: Exception, action: str) -> StoreError:
    """Map a psycopg error to ours: connection trouble is transient, bad data is a rejection."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(f"PostgreSQL unavailable while trying to {action}: {exc}")
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        return RecordRejectedError(f"PostgreSQL rejected the batch while trying to {action}: {exc}")
    return StoreError(f"PostgreSQL failed to {action}: {exc}")


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
        self._dsn = "postgresql" + uri[uri.index(":") :] if uri.startswith("pgvector:") else uri
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
        psycopg = self._psycopg
        from pgvector.psycopg import register_vector

        try:
            conn = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self._safe_uri()}: {exc}"
            ) from exc
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
            self._iterative_scan = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
            # Session settings, so a search is one round trip. Iterative scans (pgvector >= 0.8)
            # keep walking the graph until k rows pass a filter; unfiltered queries never need it.
            conn.execute(f"SET hnsw.ef_search = {int(min(1000, self.ef_search))}")
            if self._iterative_scan:
                conn.execute("SET hnsw.iterative_scan = strict_order")
        except psycopg.Error as exc:
            conn.close()
            raise _translate(exc, "enable the pgvector extension") from exc
        self._conn = conn
        self._staged = False
        self._table_ready = False
        self._ensure_table(self.dim)
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._psycopg.Error:
                log.debug("closing a broken connection failed", exc_info=True)
        self._conn = None

    def _safe_uri(self) -> str:
        # Never log a password.
        head, at, tail = self.uri.rpartition("@")
        return f"{head.split('://')[0]}://…@{tail}" if at else self.uri

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
            raise _translate(exc, action) from exc

    def _ensure_table(self, dim: int | None) -> None:
        if self._table_ready:
            return
        sql = self._psycopg.sql
        table = sql.Identifier(self.collection)
        conn = self._conn
        try:
            rows = conn.execute(
                "SELECT a.attname, a.atttypmod, format_type(a.atttypid, a.atttypmod) "
                "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
                "AND a.attname IN ('embedding', 'tokens') AND NOT a.attisdropped",
                [sql.Identifier(self.collection).as_string(conn)],
            ).fetchall()
            found = {r[0]: r for r in rows}
            row = found.get("embedding")
            if row is not None:
                self.kind = settle_kind(
                    f"table {self.collection!r}",
                    stored_kind(str(row[2]), "tokens" in found),
                    self._wanted,
                )
                stored = int(row[1]) if row[1] and row[1] > 0 else None
                if dim is not None and stored is not None and stored != dim:
                    raise ConfigError(
                        f"table {self.collection!r} holds vectors of dimension {stored}, not {dim}; "
                        "use another collection or the matching model"
                    )
                self.dim = stored
                self._section_index = self._has_section_index(conn)
                if not self._section_index and not self.readonly:
                    # A table made before section_index existed: its rows are of section 0.
                    conn.execute(
                        sql.SQL(
                            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS section_index integer "
                            "NOT NULL DEFAULT 0"
                        ).format(table)
                    )
                    self._section_index = True
                    log.info("added the section_index column to table %r", self.collection)
                self._table_ready = True
                return
            if dim is None:
                return  # created by the first upsert, which knows the dimension
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, embedding "
                        + embedding_sql(self.kind)
                        + " NOT NULL, "
                        "text text, source text, page integer, start_offset integer, end_offset integer, "
                        "chunk_index integer, headings text[], metadata jsonb, model text, "
                        "section_index integer NOT NULL DEFAULT 0"
                        + extra_columns_sql(self.kind)
                        + ")"
                    ).format(table, sql.Literal(int(dim)))
                )
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (source)").format(
                        sql.Identifier(f"{self.collection}_source_idx"), table
                    )
                )
                # A sparse collection has no index: its search is exact (see _pg_kinds).
                if indexed(self.kind) and dim <= HNSW_MAX_DIM:
                    conn.execute(
                        sql.SQL(
                            "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                            "WITH (m = {}, ef_construction = {})"
                        ).format(
                            sql.Identifier(f"{self.collection}_embedding_hnsw"),
                            table,
                            sql.Literal(self.m),
                            sql.Literal(self.ef_construction),
                        )
                    )
                elif indexed(self.kind):
                    log.warning(
                        "dimension %d > %d: no HNSW index, searches are exact", dim, HNSW_MAX_DIM
                    )
        except self._psycopg.Error as exc:
            raise _translate(exc, f"create table {self.collection!r}") from exc
        self.dim = dim
        self._section_index = True
        self._table_ready = True

    def _has_section_index(self, conn: Any) -> bool:
        row = conn.execute(
            "SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
            "AND a.attname = 'section_index' AND NOT a.attisdropped",
            [self._psycopg.sql.Identifier(self.collection).as_string(conn)],
        ).fetchone()
        return row is not None

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the table's (and, for sparse
        and multivector tables, invalid ones) are set aside: the others are written, then
        ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        self._connection()
        batch, rejected = self._checked(last_wins(records))
        if batch and not self._table_ready:
            self._ensure_table(embedding_width(batch[0].embedding))
        if batch:
            self._run("upsert records", lambda conn: self._merge(conn, batch))
        if rejected:
            raise RecordRejectedError(
                f"{len(rejected)} of {len(records)} records were rejected by table "
                f"{self.collection!r}",
                rejected,
            )

    def _checked(self, batch: list[Record]) -> tuple[list[Record], dict[str, str]]:
        if self.kind == "dense":  # dense vectors are checked by PostgreSQL itself, as before
            problems: list[str | None] = [
                None
                if r.embedding.kind == "dense"
                else f"this collection holds dense embeddings, not {r.embedding.kind}"
                for r in batch
            ]
        else:
            problems = vector_problems(batch, self.dim, kind=self.kind, nonzero=True)
        return split_rejected(batch, problems)

    def _merge(self, conn: Any, batch: list[Record]) -> None:
        sql = self._psycopg.sql
        jsonb = self._psycopg.types.json.Jsonb
        table = sql.Identifier(self.collection)
        stage = sql.Identifier(f"vs_stage_{self.collection}")
        columns, types = copy_layout(self.kind)
        dim = int(self.dim or 0)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        with conn.transaction():
            if not self._staged:
                conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(stage, table)
                )
                self._staged = True
            with conn.cursor() as cur:
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
                    stage, cols
                )
                with cur.copy(copy_sql) as copy:
                    copy.set_types(list(types))
                    for r in batch:
                        vectors = embedding_values(r, self.kind, dim)
                        copy.write_row(
                            (
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
                        )
                updates = sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in columns[1:]
                )
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (id) DO UPDATE SET {}"
                    ).format(table, cols, cols, stage, updates)
                )

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
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

    def _where_sql(self, where: Where | None, first: Any = None) -> tuple[Any, list[Any]]:
        """The filter as a ``WHERE`` clause (``first``: one more condition, already SQL)."""
        sql = self._psycopg.sql
        jsonb = self._psycopg.types.json.Jsonb
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

    def _hit_columns(self) -> list[Any]:
        sql = self._psycopg.sql
        columns: list[Any] = [sql.Identifier(c) for c in HIT_COLUMNS]
        if not self._section_index:
            # A reader of a table made before the column: read it through the row's JSON, which
            # gives 0 while the column is missing and its value once a writer has added it.
            columns[HIT_COLUMNS.index("section_index")] = sql.SQL(
                "COALESCE((to_jsonb(t) ->> 'section_index')::integer, 0)"
            )
        return columns

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
        """Rows of the hit columns, then ``score``, then ``columns``, ordered by ``order``.

        ``score`` and ``order`` are SQL with one ``%s`` for the query each; with ``positive``
        only rows whose ``order`` value is negative (a positive inner product) are kept.
        """
        sql = self._psycopg.sql
        first = sql.SQL(order + " < 0") if positive else None
        where_sql, params = self._where_sql(where, first)
        extra = [sql.Identifier(c) for c in columns]
        query = sql.SQL(
            "SELECT {}, " + score + " AS score{} FROM {} AS t {} ORDER BY " + order + " LIMIT %s"
        ).format(
            sql.SQL(", ").join(self._hit_columns()),
            sql.SQL("").join(sql.SQL(", ") + c for c in extra),
            sql.Identifier(self.collection),
            where_sql,
        )
        args = [q, *([q] if first is not None else []), *params, q, limit]
        ef = min(1000, max(self.ef_search, limit))

        def run(conn: Any) -> list[Any]:
            if ef == self.ef_search or not indexed(self.kind):
                return conn.execute(query, args).fetchall()
            with conn.transaction():  # a wider beam for this query only
                conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
                return conn.execute(query, args).fetchall()

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
            return [_hit(row, float(row[10])) for row in rows]
        e = query_embedding(vector, self.kind, self.dim)
        if not self._table_exists():
            return []
        if e.sparse is not None:
            q = sparse_query(e.sparse.indices, e.sparse.values, int(self.dim or e.sparse.dim))
            order = "(embedding <#> %s)"
            rows = self._nearest("-" + order, order, q, k, where, positive=True)
            return [_hit(row, float(row[10])) for row in rows]
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
        scores = maxsim(query_rows, [token_rows(row[11], dim) for row in rows])
        return [_hit(rows[i], float(scores[i])) for i in top_order(scores, k).tolist()]

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


def _hit(row: Any, score: float) -> Hit:
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


__all__ = ["PgVectorStore"]
