"""Side tables of a LanceDB collection: small tables of JSON documents keyed by string.

Each is a LanceDB table in the collection's database (``<collection>__vs_<name>``, see
``_lance_db``) with two columns, ``key`` (string) and ``doc`` (JSON text). A ``put_many`` is one
``merge_insert`` on ``key`` and a ``delete_many`` one delete per thousand keys: each is a LanceDB
commit, durable when it returns. A writer takes the collection's writer lock before its first
write; readers never do, and see the writer's commits as they see its records (after the
store's ``refresh_interval``).

Every commit makes a table version and a small fragment, and a manifest writes a row or two per
source, so the writer compacts the table (and removes versions older than the store's
``cleanup_older_than``) every ``compact_every`` commits, in the store's ``optimize`` and on close;
a large one gets a BTREE index on ``key``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa

from ._common import doc_json
from ._lance_db import side_table_name, side_tables_of, table_names, translated
from ._lance_filter import sql_in
from ._lance_optimize import IndexPolicy, optimize_table
from .base import Doc

log = logging.getLogger("vectorstream.stores.lancedb")

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("doc", pa.string())])
_READ_CHUNK = 500  # keys per lookup query
_DELETE_CHUNK = 1000  # keys per delete commit
COMPACT_EVERY = 64


class LanceSideTable:
    """One side table; ``check_writable`` (the store's) refuses a reader and takes the lock."""

    def __init__(
        self,
        db: Any,
        table: str,
        *,
        check_writable: Callable[[], None],
        cleanup_older_than: timedelta,
        index_from: int = 10_000,
        compact_every: int = COMPACT_EVERY,
    ) -> None:
        self.db = db
        self.name = table
        self.cleanup_older_than = cleanup_older_than
        # Lookups and merges by key use a BTREE index once the table has this many rows.
        self.policy = IndexPolicy(None, "", index_from, ("key",))
        self.compact_every = compact_every
        self._check_writable = check_writable
        self._table: Any = None  # opened on first use, created on first write
        self._lock = threading.Lock()
        self._commits = 0  # since the last compaction

    def _open(self, *, create: bool) -> Any:
        """The table handle, or ``None`` while the table does not exist and ``create`` is off."""
        if self._table is None:
            if self.name in table_names(self.db):
                with translated(f"open the side table {self.name!r}"):
                    self._table = self.db.open_table(self.name)
            elif create:
                with translated(f"create the side table {self.name!r}"):
                    self._table = self.db.create_table(self.name, schema=SCHEMA, exist_ok=True)
                log.debug("created the side table %r", self.name)
        return self._table

    # -- reading -------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        wanted = list(dict.fromkeys(keys))
        table = self._open(create=False) if wanted else None
        if table is None:
            return {}
        out: dict[str, Doc] = {}
        for i in range(0, len(wanted), _READ_CHUNK):
            where = sql_in("key", wanted[i : i + _READ_CHUNK])
            with translated(f"read the side table {self.name!r}"):
                rows = table.search().where(where).select(["key", "doc"]).limit(None).to_arrow()
            docs = rows.column("doc").to_pylist()
            out.update(zip(rows.column("key").to_pylist(), map(json.loads, docs), strict=True))
        return out

    def scan(self) -> Iterator[tuple[str, Doc]]:
        """Every row, batch by batch (in no particular order)."""
        table = self._open(create=False)
        if table is None:
            return
        with translated(f"read the side table {self.name!r}"):
            batches = table.search().select(["key", "doc"]).limit(None).to_batches()
        while True:
            with translated(f"read the side table {self.name!r}"):
                batch = next(batches, None)
            if batch is None:
                return
            keys = batch.column("key").to_pylist()
            docs = batch.column("doc").to_pylist()
            for key, doc in zip(keys, docs, strict=True):
                yield key, json.loads(doc)

    # -- writing -------------------------------------------------------------------------------

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        """Insert or replace ``docs`` by key in one commit (durable when this returns)."""
        self._check_writable()
        if not docs:
            return
        encoded = [doc_json(k, d) for k, d in docs.items()]
        rows = pa.table({"key": list(docs), "doc": encoded}, schema=SCHEMA)
        with self._lock:
            table = self._open(create=True)
            with translated(f"write {len(encoded)} rows to the side table {self.name!r}"):
                (
                    table.merge_insert("key")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(rows)
                )
            self._committed(1)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._check_writable()
        doomed = list(dict.fromkeys(keys))
        with self._lock:
            table = self._open(create=False) if doomed else None
            if table is None:
                return
            for i in range(0, len(doomed), _DELETE_CHUNK):
                where = sql_in("key", doomed[i : i + _DELETE_CHUNK])
                with translated(f"delete from the side table {self.name!r}"):
                    table.delete(where)
                self._committed(1)

    def _committed(self, commits: int) -> None:
        self._commits += commits
        if self._commits >= self.compact_every:
            self._compact()

    def optimize(self, *, force: bool = False) -> None:
        """Compact and drop old versions: after any commit, or always with ``force``."""
        with self._lock:
            if force:
                self._open(create=False)
            if self._table is not None and (force or self._commits):
                self._compact()

    def _compact(self) -> None:
        optimize_table(self._table, self.name, self.policy, self.cleanup_older_than)
        self._commits = 0


class SideTables:
    """The side tables of one collection, one handle per table, made on first use."""

    def __init__(
        self,
        db: Any,
        collection: str,
        *,
        check_writable: Callable[[], None],
        cleanup_older_than: timedelta,
        index_from: int,
    ) -> None:
        self.db = db
        self.collection = collection
        self._check_writable = check_writable
        self._cleanup = cleanup_older_than
        self._index_from = index_from
        self._open: dict[str, LanceSideTable] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LanceSideTable:
        """Side table ``name`` (checked: lowercase letters, digits, ``_``)."""
        return self._handle(side_table_name(self.collection, name))

    def _handle(self, table: str) -> LanceSideTable:
        with self._lock:
            side = self._open.get(table)
            if side is None:
                side = LanceSideTable(
                    self.db,
                    table,
                    check_writable=self._check_writable,
                    cleanup_older_than=self._cleanup,
                    index_from=self._index_from,
                )
                self._open[table] = side
            return side

    def optimize(self) -> None:
        """Compact every side table of the collection, open here or not."""
        for table in side_tables_of(self.db, self.collection):
            self._handle(table).optimize(force=True)

    def drop(self) -> None:
        """Drop every side table of the collection."""
        for table in side_tables_of(self.db, self.collection):
            with translated(f"drop the side table {table!r}"):
                self.db.drop_table(table, ignore_missing=True)
        self._open.clear()

    def close(self, *, compact: bool) -> None:
        """Forget the handles; with ``compact``, first compact those written since the last time."""
        try:
            if compact:
                for side in list(self._open.values()):
                    side.optimize()
        finally:
            self._open.clear()


__all__ = ["COMPACT_EVERY", "SCHEMA", "LanceSideTable", "SideTables"]
