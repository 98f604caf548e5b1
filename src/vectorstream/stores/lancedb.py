"""The embedded default store: one LanceDB table per collection.

URI: ``lancedb://PATH``, ``lancedb:PATH`` or a bare path (default ``./.vectorstream``).

The table holds one row per chunk in the record layout of ``_records`` (shared with the file
sinks); filters are translated by ``_lance_filter``, queries run by ``_lance_search``; a small
collection is searched from an exact in-memory snapshot (``_resident``).

A collection holds one embedding kind (``open(..., kind=...)``, read back from the table after):
``dense`` (cosine, the in-memory snapshot and an ANN index as above), ``multivector`` (a
``list<fixed_size_list<float32>[dim]>`` column that LanceDB searches natively with MaxSim,
indexed by ``optimize()`` like dense vectors) or ``sparse`` (term ids and weights in a struct
column, which LanceDB cannot index: searches score every row passing the filter exactly, in
bounded batches, ``_lance_sparse``).

Writes: each :meth:`LanceDBStore.upsert` is exactly one LanceDB commit (``add`` into an empty
table, or of multivector rows none of whose ids is stored; ``merge_insert("id")`` otherwise:
``_lance_write``), so it is durable when it returns and a batch of thousands of rows makes one
table version, not thousands. :meth:`LanceDBStore.optimize` compacts the small fragments the
commits leave, removes old versions and builds indexes once the table is large; a large
multivector table is not compacted whole (``_lance_optimize``: compaction holds what it rewrites
in memory).

Side tables (:meth:`LanceDBStore.side_table`, where the pipeline keeps its manifest) are LanceDB
tables in the same folder, ``<collection>__vs_<name>`` (``_lance_side``); they are not
collections, never show in :func:`list_collections`, and :meth:`LanceDBStore.drop` drops them
with their collection.

A collection made before the ``section_index`` column existed gets it (all null, read as 0) when a
writer opens it, or before its first write in ``auto`` mode; a reader changes nothing and reads
0 for such rows until a writer has added the column.

Concurrency: one writer per collection, many readers. A writer takes an ``flock`` on
``PATH/.locks/<collection>.lock``; a second writer fails fast with ``StoreLockedError``. Readers
(``mode="r"``) never take the lock and never block: LanceDB readers see consistent versions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RecordRejectedError, StoreError
from ..types import EmbeddingKind, Record
from ._flock import WriterLock
from ._kinds import check_kind
from ._lance_db import (
    DEFAULT_PATH,
    add_section_index,
    check_collection_name,
    has_section_index,
    list_collections,
    open_collection,
    path_of,
    translated,
)
from ._lance_filter import Predicate, sql_in, sql_string, translate_where
from ._lance_memory import HeapTrimmer
from ._lance_optimize import IndexPolicy, OptimizeReport, optimize_table
from ._lance_reads import LanceReads
from ._lance_side import LanceSideTable, SideTables
from ._lance_write import write_rows
from ._records import (
    records_to_arrow,
    table_schema,
)
from ._resident import ResidentCache
from .base import StoreCapabilities

log = logging.getLogger("vectorstream.stores.lancedb")

_MODELS_TTL = 1.0  # seconds a models() answer is reused without asking the table version
# A collection whose vectors and hit columns fit this many bytes is searched from memory.
DEFAULT_MEMORY_SEARCH_BYTES = 64 * 2**20
# A multivector table larger than this is not compacted whole by optimize() (_lance_optimize).
COMPACT_MAX_BYTES = 64 * 2**20


class LanceDBStore(LanceReads):
    """A collection in an embedded LanceDB database. Create with :meth:`open`."""

    capabilities = StoreCapabilities(
        kinds=frozenset({"dense", "sparse", "multivector"}), filters=True, range_search=True
    )

    def __init__(
        self,
        *,
        uri: str,
        collection: str,
        path: Path,
        db: Any,
        table: Any,
        dim: int,
        mode: str,
        lock: WriterLock,
        index_threshold: int,
        scalar_index_threshold: int,
        index_type: str,
        nprobes: int,
        refine_factor: int | None,
        cleanup_older_than: timedelta,
        memory_search_bytes: int = DEFAULT_MEMORY_SEARCH_BYTES,
        refresh_interval: float | None = None,
        section_index: bool = True,
        kind: EmbeddingKind = "dense",
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.path = path
        self.dim = dim
        self.kind: EmbeddingKind = kind
        self.mode = mode
        self.index_threshold = index_threshold
        self.scalar_index_threshold = scalar_index_threshold
        self.index_type = index_type
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.cleanup_older_than = cleanup_older_than
        self.memory_search_bytes = memory_search_bytes
        self._db = db
        self._table = table
        self._lock = lock
        self._write_mutex = threading.Lock()
        self._lock_mutex = threading.Lock()
        # (checked at, table version, models): search() checks the model on every query.
        self._models_cache: tuple[float, int, frozenset[str]] | None = None
        self._has_vector_index: bool | None = None
        # Whether the table has the section_index column; while it does not (an older table
        # opened by a reader), the schema is asked again at most every _MODELS_TTL seconds, so
        # the column shows once a writer has added it.
        self._section_index = section_index
        self._section_checked = time.monotonic()
        self._sides = SideTables(
            db,
            collection,
            check_writable=self._check_writable,
            cleanup_older_than=cleanup_older_than,
            index_from=scalar_index_threshold,
        )
        self._closed = False
        self._trimmer = HeapTrimmer()  # large writes leave freed heap behind (_lance_memory)
        # A snapshot is used this long before its version is compared with the table's: never
        # longer than the reader's own refresh interval (0: every query sees every commit).
        ttl = _MODELS_TTL if refresh_interval is None else min(_MODELS_TTL, refresh_interval)
        self._memory = ResidentCache(memory_search_bytes, ttl, name=collection)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        uri: str = DEFAULT_PATH,
        collection: str = "documents",
        *,
        dim: int | None = None,
        mode: str | None = None,
        index_threshold: int = 100_000,
        scalar_index_threshold: int = 10_000,
        index_type: str = "IVF_SQ",
        nprobes: int = 32,
        refine_factor: int | None = 5,
        cleanup_older_than: float = 10.0,
        refresh_interval: float | None = 1.0,
        memory_search_bytes: int = DEFAULT_MEMORY_SEARCH_BYTES,
        kind: str | None = None,
        **unknown: Any,
    ) -> LanceDBStore:
        """Open ``collection`` at ``uri``, creating it when ``dim`` is given and it is missing.

        ``kind``: the embedding kind a new collection holds (``"dense"`` when not given); an
        existing collection's kind is read from its table, and another ``kind`` is refused.
        ``dim`` is the vector width (the vocabulary size for sparse, the row width for
        multivector).

        ``mode``: ``"w"`` takes the writer lock now; ``"r"`` never locks and refuses writes;
        ``None`` (default) takes the lock now when ``dim`` is given (a caller that may create
        the table means to write) and otherwise on the first write.
        ``index_threshold``: ``optimize()`` builds the ANN index (``index_type``, cosine) once
        the table has this many rows; ``nprobes``/``refine_factor`` tune searches through it.
        IVF_SQ is the default because IVF_PQ's coarser codes lost half the true neighbours of
        random 384-d vectors here (recall@10 0.47 with refine 10) while IVF_SQ kept 0.96 (1.0
        with refining).
        ``scalar_index_threshold``: rows from which ``optimize()`` adds BTREE indexes on
        ``id`` (merge key) and ``source`` (deletes, filters).
        ``cleanup_older_than``: seconds (>= 0.001); ``optimize()`` removes versions older than
        this. Readers refresh every ``refresh_interval``, so versions older than a few seconds
        are no longer read by anyone.
        ``refresh_interval``: seconds between a reader's checks for new versions written by
        another process (``None``: never; the writer always sees its own writes).
        ``memory_search_bytes``: a collection whose vectors and hit columns fit this budget is
        searched exactly from an in-memory snapshot (one matrix-vector product) when the query
        has no filter, instead of paying LanceDB's fixed cost per query; ``0`` turns it off.
        The snapshot follows the table version like every read (``refresh_interval``).
        """
        if unknown:
            raise ConfigError(
                f"unknown LanceDB options {sorted(unknown)}; known: cleanup_older_than, "
                "index_threshold, index_type, kind, memory_search_bytes, mode, nprobes, "
                "refine_factor, refresh_interval, scalar_index_threshold"
            )
        if cleanup_older_than < 0.001:
            # LanceDB rounds to milliseconds; 0 would also remove a version a reader is using.
            raise ConfigError(f"cleanup_older_than must be >= 0.001 s, got {cleanup_older_than}")
        if mode not in (None, "r", "w"):
            raise ConfigError(f"mode must be 'r', 'w' or None, got {mode!r}")
        if not isinstance(memory_search_bytes, int) or memory_search_bytes < 0:
            raise ConfigError(
                f"memory_search_bytes must be an integer >= 0, got {memory_search_bytes!r}"
            )
        check_collection_name(collection)
        wanted = None if kind is None else check_kind(kind)
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        path = path_of(uri)
        lock = WriterLock(
            path / ".locks" / f"{collection}.lock", f"collection {collection!r} at {path}"
        )
        if mode == "w" or (mode is None and dim is not None):
            lock.acquire()  # before touching the table, so two writers never both create it
        try:
            db, table, table_dim, table_kind = open_collection(
                path, collection, dim, mode, refresh_interval, wanted
            )
            section_index = has_section_index(table)
            if not section_index and lock.held:
                add_section_index(table, collection)  # a writer upgrades an older table now
                section_index = True
        except BaseException:
            lock.release()
            raise
        return cls(
            uri=uri,
            collection=collection,
            path=path,
            db=db,
            table=table,
            dim=table_dim,
            mode=mode or "auto",
            lock=lock,
            index_threshold=index_threshold,
            scalar_index_threshold=scalar_index_threshold,
            index_type=index_type,
            nprobes=nprobes,
            refine_factor=refine_factor,
            cleanup_older_than=timedelta(seconds=cleanup_older_than),
            memory_search_bytes=memory_search_bytes,
            refresh_interval=None if mode == "w" else refresh_interval,
            section_index=section_index,
            kind=table_kind,
        )

    # -- writing -------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.uri} collection {self.collection!r} is closed")
        if self.mode == "r":
            raise StoreError(
                f"collection {self.collection!r} at {self.path} was opened read-only (mode='r')"
            )
        if not self._lock.held:
            with self._lock_mutex:  # two threads' first writes must not both open the lock file
                self._lock.acquire()

    def _changed(self) -> None:
        """Forget what was cached about the rows: this store just wrote to them."""
        self._models_cache = None
        self._memory.invalidate()

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace ``records`` by id in one commit (durable when this returns).

        Records with a bad vector (wrong dimension, NaN, all zeros, another kind than the
        collection's) are set aside: the others are written, then ``RecordRejectedError`` lists
        the rejected ids with reasons.
        """
        self._check_writable()
        table, rejected = records_to_arrow(records, self.dim, kind=self.kind)
        if table.num_rows:
            with self._write_mutex, translated(f"upsert {table.num_rows} rows"):
                if not self._section_index:  # an older table opened in auto mode
                    add_section_index(self._table, self.collection)
                    self._section_index = True
                # Large rows: an append unless some ids are stored (_lance_write).
                write_rows(self._table, table, append_new=self.kind == "multivector")
            self._changed()
            self._trimmer.wrote(table.nbytes)
            log.debug("upserted %d rows into %r", table.num_rows, self.collection)
        if rejected:
            raise RecordRejectedError(
                f"{len(rejected)} of {len(records)} records were rejected by {self.collection!r}",
                rejected,
            )

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        """Delete by ids, by source, or by both (rows matching both); return how many went."""
        if ids is None and source is None:
            raise ConfigError("delete() needs ids or source; refusing to delete everything")
        self._check_writable()
        clauses: list[str] = []
        if source is not None:
            clauses.append(f"source = {sql_string(source)}")
        if ids is not None:
            id_list = list(dict.fromkeys(ids))
            if not id_list:
                return 0
            clauses.append(sql_in("id", id_list))
        with self._write_mutex, translated("delete rows"):
            result = self._table.delete(" AND ".join(clauses))
        deleted = int(getattr(result, "num_deleted_rows", 0) or 0)
        self._changed()
        log.debug("deleted %d rows from %r", deleted, self.collection)
        return deleted

    def flush(self) -> None:
        """Nothing to do: every upsert is already a durable commit."""

    def reload(self) -> None:
        """See commits made to the table by other means (the Ray engine's fragment commits)."""
        self._check_writable()
        with self._write_mutex, translated("reload the table"):
            self._table.checkout_latest()
        self._changed()

    def optimize(self) -> OptimizeReport:
        """Compact fragments, drop old versions, update indexes; build them once large enough.

        The collection's side tables are compacted too.
        """
        self._check_writable()
        # Sparse rows have no vector index in LanceDB; multivector ones take the dense types.
        vector_rows = None if self.kind == "sparse" else self.index_threshold
        policy = IndexPolicy(
            vector_rows,
            self.index_type,
            self.scalar_index_threshold,
            ("id", "source"),
            # Compaction holds the table in memory: bounded for the kind whose rows are large.
            compact_max_bytes=COMPACT_MAX_BYTES if self.kind == "multivector" else None,
        )
        with self._write_mutex:
            # Compaction allocates on top of what the process holds: start from a trimmed heap
            # and give its own buffers back after.
            self._trimmer.release()
            report = optimize_table(self._table, self.collection, policy, self.cleanup_older_than)
            self._trimmer.release()
        self._sides.optimize()
        self._has_vector_index = None
        self._memory.invalidate()
        return report

    # -- side tables ---------------------------------------------------------------------------

    @property
    def exclusive(self) -> bool:
        """Whether this handle holds the writer lock: nobody else writes while it is open."""
        return bool(self._lock.held)

    def side_table(self, name: str) -> LanceSideTable:
        """Side table ``name`` of this collection (created on the first write; see module doc).

        A read-only store reads it without the writer lock; its writes are refused.
        """
        if self._closed:
            raise StoreError(f"the store {self.uri} collection {self.collection!r} is closed")
        return self._sides.get(name)

    def drop(self) -> None:
        """Drop the collection and its side tables from the database, then close the store."""
        self._check_writable()
        with self._write_mutex:
            self._sides.drop()
            with translated(f"drop table {self.collection!r} at {self.path}"):
                self._db.drop_table(self.collection, ignore_missing=True)
        log.info("dropped collection %r at %s", self.collection, self.path)
        self.close()

    # -- reading -------------------------------------------------------------------------------

    def count(self) -> int:
        with translated("count rows"):
            return int(self._table.count_rows())

    def ids(self, source: str | None = None) -> set[str]:
        """Every id in the collection, or of one source."""
        query = self._table.search().select(["id"]).limit(None)
        if source is not None:
            query = query.where(f"source = {sql_string(source)}")
        with translated("list ids"):
            return set(query.to_arrow().column("id").to_pylist())

    def models(self) -> frozenset[str]:
        """The distinct ``model`` values stored.

        Cached per table version, and the version itself is asked at most once a second: a
        search checks its model on every query, and another process's writes are only seen
        every ``refresh_interval`` anyway. This store's own writes clear the cache.
        """
        snapshot = self._memory.fresh()
        if snapshot is not None:
            return snapshot.models  # the snapshot is of the current version: no I/O
        now = time.monotonic()
        cached = self._models_cache
        if cached is not None and now - cached[0] < _MODELS_TTL:
            return cached[2]
        version = self.version
        if cached is not None and cached[1] == version:
            self._models_cache = (now, version, cached[2])
            return cached[2]
        import pyarrow.compute as pc

        with translated("list models"):
            column = self._table.search().select(["model"]).limit(None).to_arrow().column("model")
            found = frozenset(str(m) for m in pc.unique(column).to_pylist() if m is not None)
        self._models_cache = (now, version, found)
        return found

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Compact side tables written since their last compaction; release the writer lock.

        Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        self._memory.invalidate()
        try:
            self._sides.close(compact=self._lock.held)
        finally:
            self._lock.release()

    def __enter__(self) -> LanceDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LanceDBStore({self.uri!r}, collection={self.collection!r}, kind={self.kind!r}, "
            f"dim={self.dim}, mode={self.mode!r})"
        )


__all__ = [
    "DEFAULT_PATH",
    "LanceDBStore",
    "OptimizeReport",
    "Predicate",
    "list_collections",
    "path_of",
    "records_to_arrow",
    "sql_string",
    "table_schema",
    "translate_where",
]
