"""The embedded default store: one LanceDB table per collection.

URI: ``lancedb://PATH``, ``lancedb:PATH`` or a bare path (default ``./.vectorstream``).

Table schema (one row per chunk)::

    id           string, not null   deterministic record id (merge key of upserts)
    vector       fixed_size_list<float32>[dim]
    text         string
    source       string
    page         int32, nullable
    start, end   int64               offsets into the section text
    chunk_index  int32
    headings     list<string>
    metadata     JSON (Arrow ``arrow.json`` extension: a UTF-8 JSON string; LanceDB keeps it as
                 JSONB, which lets ``metadata.<key>`` filters run inside the query engine)
    model        string

Writes: each :meth:`LanceDBStore.upsert` is exactly one LanceDB commit (``add`` while the table
is empty, ``merge_insert("id")`` after), so it is durable when it returns and a batch of thousands
of rows makes one table version, not thousands. :meth:`LanceDBStore.optimize` compacts the small
fragments the commits leave, removes old versions and builds indexes once the table is large.

Concurrency: one writer per collection, many readers. A writer takes an ``flock`` on
``PATH/.locks/<collection>.lock``; a second writer fails fast with ``StoreLockedError``. Readers
(``mode="r"``) never take the lock and never block: LanceDB readers see consistent versions.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, RecordRejectedError, StoreError, VectorstreamError
from ..types import Hit, Record
from ._flock import WriterLock
from ._resident import ResidentSnapshot
from .base import StoreCapabilities, Where, dipr_cut, matches, validate_where

log = logging.getLogger("vectorstream.stores.lancedb")

DEFAULT_PATH = "./.vectorstream"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_STRING_COLUMNS = ("source", "model")
_INT_COLUMNS = ("page", "chunk_index")
# Columns a search returns; the vector itself is never materialised for a hit.
_HIT_COLUMNS = [
    "id",
    "text",
    "source",
    "page",
    "start",
    "end",
    "chunk_index",
    "headings",
    "metadata",
]
# The first page of a range query: most DIPR answers are small, so fetch this many and only
# run the second, distance-bounded query when the whole page is still within beta.
_RANGE_FIRST_PAGE = 64
_MODELS_TTL = 1.0  # seconds a models() answer is reused without asking the table version
# A collection whose vectors and hit columns fit this many bytes is searched from memory.
DEFAULT_MEMORY_SEARCH_BYTES = 64 * 2**20
# Under a stream of writes from another process, rebuild the memory snapshot at most this often;
# in between, searches go to LanceDB, which always sees the newest version.
_RESIDENT_REBUILD_S = 5.0


def table_schema(dim: int) -> pa.Schema:
    """The Arrow schema of a collection holding ``dim``-dimensional vectors."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("text", pa.string()),
            pa.field("source", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("chunk_index", pa.int32()),
            pa.field("headings", pa.list_(pa.string())),
            pa.field("metadata", pa.json_()),
            pa.field("model", pa.string()),
        ]
    )


def path_of(uri: str) -> Path:
    """``lancedb://PATH`` / ``lancedb:PATH`` / ``PATH`` → the folder that holds the tables."""
    raw = uri
    if raw.lower().startswith("lancedb://"):
        raw = raw[len("lancedb://") :]
    elif raw.lower().startswith("lancedb:"):
        raw = raw[len("lancedb:") :]
    return Path(raw or DEFAULT_PATH).expanduser()


# ---------------------------------------------------------------------------------------------
# Filters: the shared ``where`` mapping → a LanceDB SQL predicate (+ a Python check)
# ---------------------------------------------------------------------------------------------


def sql_string(value: str) -> str:
    """A SQL string literal: single quotes doubled (DataFusion treats backslashes literally)."""
    return "'" + value.replace("'", "''") + "'"


def _column_literals(column: str, values: Sequence[Any]) -> list[str]:
    """Literals for the values that can equal a ``column`` cell (Python ``==`` semantics)."""
    out: list[str] = []
    for v in values:
        if column in _STRING_COLUMNS:
            if isinstance(v, str):
                out.append(sql_string(v))
        elif isinstance(v, bool | int) or (
            isinstance(v, float) and v.is_integer() and abs(v) < 2**31
        ):
            out.append(str(int(v)))
        # Anything else (a string for an int column, 2.5 for a page) can never match.
    return out


def _json_texts(value: Any) -> list[str] | None:
    """The compact JSON texts LanceDB's ``json_extract`` may give for a value equal to ``value``.

    Python equality is the reference (``matches``): ``2 == 2.0 == True`` for 1, so a numeric
    filter lists every spelling. ``None`` means "no exact SQL spelling": filter in Python only.
    """
    if isinstance(value, str):
        # serde_json and Python's json agree on escapes: \" \\ \n \t …, \u00XX for other controls.
        return [json.dumps(value, ensure_ascii=False)]
    if isinstance(value, bool):
        return ["true", "1", "1.0"] if value else ["false", "0", "0.0", "-0.0"]
    if isinstance(value, float) and not value.is_integer():
        # Only plain decimals: exponent spellings differ between serde_json and Python.
        return [repr(value)] if 1e-4 <= abs(value) < 1e15 else None
    number = int(value)
    if abs(number) >= 10**15:
        return None
    texts = [str(number), f"{number}.0"]
    if number in (0, 1):
        texts.append("true" if number else "false")
    if number == 0:
        texts.append("-0.0")
    return texts


def _json_path(key: str) -> str | None:
    if not key or any(c in key for c in '"\\') or any(ord(c) < 32 for c in key):
        return None
    return f'$["{key}"]'


@dataclass(frozen=True, slots=True)
class Predicate:
    """A translated filter: ``sql`` for LanceDB and ``post`` to re-check rows in Python.

    ``post`` holds the ``metadata.*`` clauses: their SQL is a superset in exotic cases (a key
    with quotes, 1e300) or absent, so every returned row is re-checked with ``matches``.
    """

    sql: str | None
    post: dict[str, Any]


def translate_where(where: Where | None) -> Predicate:
    """Translate the shared filter mapping (see ``stores.base``) into a LanceDB predicate."""
    clauses: list[str] = []
    post: dict[str, Any] = {}
    for key, value in validate_where(where).items():
        values = list(value) if isinstance(value, list | tuple) else [value]
        if key.startswith("metadata."):
            post[key] = value
            if not values:
                clauses.append("FALSE")
                continue
            path = _json_path(key[9:])
            spelled = [_json_texts(v) for v in values]
            if path is None or any(s is None for s in spelled):
                continue  # no exact SQL spelling: the Python check alone decides
            texts = dict.fromkeys(t for s in spelled if s is not None for t in s)
            literals = ", ".join(sql_string(t) for t in texts)
            clauses.append(f"json_extract(metadata, {sql_string(path)}) IN ({literals})")
            continue
        literals_list = _column_literals(key, values)
        if not literals_list:
            clauses.append("FALSE")
        elif len(literals_list) == 1:
            clauses.append(f"{key} = {literals_list[0]}")
        else:
            clauses.append(f"{key} IN ({', '.join(literals_list)})")
    return Predicate(" AND ".join(clauses) or None, post)


# ---------------------------------------------------------------------------------------------
# Records → Arrow
# ---------------------------------------------------------------------------------------------


def _vector_problem(vector: np.ndarray, dim: int) -> str | None:
    if vector.ndim != 1 or vector.shape[0] != dim:
        return f"vector has shape {tuple(vector.shape)}, the collection holds {dim} dimensions"
    if not np.all(np.isfinite(vector)):
        return "vector contains NaN or infinity"
    if not np.any(vector):
        return "vector is all zeros (cosine similarity is undefined)"
    return None


def records_to_arrow(records: Sequence[Record], dim: int) -> tuple[pa.Table, dict[str, str]]:
    """Convert records (last one wins per id) into a table; return it with the rejected ids."""
    rejected: dict[str, str] = {}
    latest: dict[str, Record] = {}
    for record in records:
        vector = np.asarray(record.vector)
        problem = _vector_problem(vector, dim)
        if problem is not None:
            rejected[record.id] = problem
            continue
        latest.pop(record.id, None)  # keep insertion order of the last occurrence
        latest[record.id] = record
    rows = list(latest.values())
    vectors = (
        np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
        if rows
        else np.zeros((0, dim), np.float32)
    )
    columns = {
        "id": pa.array([r.id for r in rows], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        "text": pa.array([r.text for r in rows], pa.string()),
        "source": pa.array([r.source for r in rows], pa.string()),
        "page": pa.array([r.page for r in rows], pa.int32()),
        "start": pa.array([r.start for r in rows], pa.int64()),
        "end": pa.array([r.end for r in rows], pa.int64()),
        "chunk_index": pa.array([r.chunk_index for r in rows], pa.int32()),
        "headings": pa.array([list(r.headings) for r in rows], pa.list_(pa.string())),
        # default=str: a date or a Path in parser metadata is stored as its text, not refused.
        "metadata": pa.array(
            [json.dumps(dict(r.metadata), ensure_ascii=False, default=str) for r in rows],
            pa.json_(),
        ),
        "model": pa.array([r.model for r in rows], pa.string()),
    }
    return pa.table(columns, schema=table_schema(dim)), rejected


def _hit_from_row(row: Mapping[str, Any], score: float) -> Hit:
    raw_meta = row["metadata"]
    return Hit(
        id=row["id"],
        score=score,
        text=row["text"] or "",
        source=row["source"] or "",
        chunk_index=row["chunk_index"] or 0,
        start=row["start"] or 0,
        end=row["end"] or 0,
        page=row["page"],
        headings=tuple(row["headings"] or ()),
        metadata=json.loads(raw_meta) if raw_meta else {},
    )


def _hits_from_arrow(table: pa.Table) -> list[Hit]:
    cols = {name: table.column(name).to_pylist() for name in _HIT_COLUMNS}
    distances = table.column("_distance").to_pylist()
    return [
        _hit_from_row({name: values[i] for name, values in cols.items()}, 1.0 - float(d))
        for i, d in enumerate(distances)
    ]


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


def _background_loop() -> Any:
    """LanceDB's own event-loop thread, which its sync API hops to several times per query.

    A vector query through the sync builder crosses to that thread three times (schema for the
    builder, schema for the projection, execution); building the async query inside one
    coroutine crosses once. On 2 busy cores each crossing is a context switch that costs about
    as much as the search itself (benchmarks/lancedb_query.py). Private API: when a LanceDB
    release moves it, searches fall back to the public sync builder.
    """
    try:
        from lancedb.background_loop import LOOP
    except ImportError:
        return None
    return LOOP if callable(getattr(LOOP, "run", None)) else None


_ONE_HOP: Any = _background_loop()


@dataclass(frozen=True, slots=True)
class OptimizeReport:
    """What :meth:`LanceDBStore.optimize` did."""

    rows: int
    versions_before: int
    versions_after: int
    vector_index_built: bool
    scalar_indexes_built: tuple[str, ...]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn any LanceDB/Arrow exception into a ``StoreError`` raised from the original."""
    try:
        yield
    except VectorstreamError:
        raise
    except Exception as exc:  # the vendor boundary: lance raises ValueError/RuntimeError/OSError/…
        raise StoreError(f"LanceDB could not {what}: {exc}") from exc


class LanceDBStore:
    """A collection in an embedded LanceDB database. Create with :meth:`open`."""

    capabilities = StoreCapabilities(
        dense=True, sparse=False, multivector=False, filters=True, range_search=True, embedded=True
    )

    def __init__(
        self,
        *,
        uri: str,
        collection: str,
        path: Path,
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
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.path = path
        self.dim = dim
        self.mode = mode
        self.index_threshold = index_threshold
        self.scalar_index_threshold = scalar_index_threshold
        self.index_type = index_type
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.cleanup_older_than = cleanup_older_than
        self._table = table
        self._lock = lock
        self._write_mutex = threading.Lock()
        # (checked at, table version, models): search() checks the model on every query.
        self._models_cache: tuple[float, int, frozenset[str]] | None = None
        self._has_vector_index: bool | None = None
        self._closed = False
        self.memory_search_bytes = memory_search_bytes
        # How long a snapshot is used before its version is compared with the table's: never
        # longer than the reader's own refresh interval (0: every query sees every commit).
        self._version_ttl = (
            _MODELS_TTL if refresh_interval is None else min(_MODELS_TTL, refresh_interval)
        )
        self._resident: ResidentSnapshot | None = None
        self._resident_checked = 0.0  # when its version was last compared with the table's
        self._resident_built = -math.inf  # when the last snapshot was loaded
        self._resident_too_big: tuple[int, int] | None = None  # (version, rows) found too big
        self._resident_lock = threading.Lock()

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
        **unknown: Any,
    ) -> LanceDBStore:
        """Open ``collection`` at ``uri``, creating it when ``dim`` is given and it is missing.

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
                "index_threshold, index_type, memory_search_bytes, mode, nprobes, refine_factor, "
                "refresh_interval, scalar_index_threshold"
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
        if not _NAME_RE.match(collection):
            raise ConfigError(
                f"collection name {collection!r} must use letters, digits, '_', '-' or '.'"
            )
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        path = path_of(uri)
        lock = WriterLock(
            path / ".locks" / f"{collection}.lock", f"collection {collection!r} at {path}"
        )
        if mode == "w" or (mode is None and dim is not None):
            lock.acquire()  # before touching the table, so two writers never both create it
        try:
            table, table_dim = cls._open_table(path, collection, dim, mode, refresh_interval)
        except BaseException:
            lock.release()
            raise
        return cls(
            uri=uri,
            collection=collection,
            path=path,
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
        )

    @staticmethod
    def _open_table(
        path: Path, collection: str, dim: int | None, mode: str | None, refresh: float | None
    ) -> tuple[Any, int]:
        import lancedb

        if mode == "r" and not path.is_dir():
            raise StoreError(f"no LanceDB store at {path}; ingest something there first")
        interval = None if mode == "w" or refresh is None else timedelta(seconds=refresh)
        with _translated(f"open the database at {path}"):
            db = lancedb.connect(str(path), read_consistency_interval=interval)
            names = _table_names(db)
        if collection in names:
            with _translated(f"open table {collection!r} at {path}"):
                table = db.open_table(collection)
                field = table.schema.field("vector")
            stored = getattr(field.type, "list_size", None)
            if not isinstance(stored, int) or stored <= 0:
                raise StoreError(
                    f"table {collection!r} at {path} has no fixed-size 'vector' column; "
                    "it was not written by vectorstream"
                )
            if dim is not None and dim != stored:
                raise ConfigError(
                    f"collection {collection!r} at {path} holds {stored}-dimensional vectors but "
                    f"the model gives {dim}; use another collection or the model it was built with"
                )
            return table, stored
        if dim is None:
            raise StoreError(
                f"collection {collection!r} does not exist at {path} (found: {sorted(names)}); "
                "ingest into it first"
            )
        if mode == "r":
            raise StoreError(f"collection {collection!r} does not exist at {path}")
        with _translated(f"create table {collection!r} at {path}"):
            table = db.create_table(collection, schema=table_schema(dim), exist_ok=True)
        log.info("created collection %r (%d dimensions) at %s", collection, dim, path)
        return table, dim

    # -- writing -------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.uri} collection {self.collection!r} is closed")
        if self.mode == "r":
            raise StoreError(
                f"collection {self.collection!r} at {self.path} was opened read-only (mode='r')"
            )
        self._lock.acquire()

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace ``records`` by id in one commit (durable when this returns).

        Records with a bad vector (wrong dimension, NaN, all zeros) are set aside: the others
        are written, then ``RecordRejectedError`` lists the rejected ids with reasons.
        """
        self._check_writable()
        table, rejected = records_to_arrow(records, self.dim)
        if table.num_rows:
            with self._write_mutex, _translated(f"upsert {table.num_rows} rows"):
                if self._table.count_rows() == 0:
                    self._table.add(table)
                else:
                    (
                        self._table.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute(table)
                    )
            self._models_cache = None
            self._resident = None
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
            clauses.append(f"id IN ({', '.join(sql_string(i) for i in id_list)})")
        with self._write_mutex, _translated("delete rows"):
            result = self._table.delete(" AND ".join(clauses))
        deleted = int(getattr(result, "num_deleted_rows", 0) or 0)
        self._models_cache = None
        self._resident = None
        log.debug("deleted %d rows from %r", deleted, self.collection)
        return deleted

    def flush(self) -> None:
        """Nothing to do: every upsert is already a durable commit."""

    def optimize(self) -> OptimizeReport:
        """Compact fragments, drop old versions, update indexes; build them once large enough."""
        self._check_writable()
        with self._write_mutex, _translated(f"optimize {self.collection!r}"):
            versions_before = len(self._table.list_versions())
            rows = self._table.count_rows()
            indexed = {tuple(ix.columns) for ix in self._table.list_indices()}
            built_vector = False
            if rows >= self.index_threshold and ("vector",) not in indexed:
                log.info(
                    "building a %s index on %d vectors of %r",
                    self.index_type,
                    rows,
                    self.collection,
                )
                self._table.create_index(
                    metric="cosine", vector_column_name="vector", index_type=self.index_type
                )
                built_vector = True
            built_scalar: list[str] = []
            if rows >= self.scalar_index_threshold:
                for column in ("id", "source"):
                    if (column,) not in indexed:
                        self._table.create_scalar_index(column, index_type="BTREE")
                        built_scalar.append(column)
            # Last, so the versions that index creation committed are cleaned up too. It also
            # folds rows added since the indexes were built into them.
            self._table.optimize(cleanup_older_than=self.cleanup_older_than)
            versions_after = len(self._table.list_versions())
        self._has_vector_index = None
        self._resident = None
        return OptimizeReport(
            rows, versions_before, versions_after, built_vector, tuple(built_scalar)
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The table version readers currently see (each upsert adds exactly one)."""
        with _translated("read the table version"):
            return int(self._table.version)

    def count(self) -> int:
        with _translated("count rows"):
            return int(self._table.count_rows())

    def ids(self, source: str | None = None) -> set[str]:
        """Every id in the collection, or of one source."""
        query = self._table.search().select(["id"]).limit(None)
        if source is not None:
            query = query.where(f"source = {sql_string(source)}")
        with _translated("list ids"):
            return set(query.to_arrow().column("id").to_pylist())

    def models(self) -> frozenset[str]:
        """The distinct ``model`` values stored.

        Cached per table version, and the version itself is asked at most once a second: a
        search checks its model on every query, and another process's writes are only seen
        every ``refresh_interval`` anyway. This store's own writes clear the cache.
        """
        now = time.monotonic()
        snapshot = self._resident
        if snapshot is not None and now - self._resident_checked < self._version_ttl:
            return snapshot.models  # the snapshot is of the current version: no I/O
        cached = self._models_cache
        if cached is not None and now - cached[0] < _MODELS_TTL:
            return cached[2]
        version = self.version
        if cached is not None and cached[1] == version:
            self._models_cache = (now, version, cached[2])
            return cached[2]
        import pyarrow.compute as pc

        with _translated("list models"):
            column = self._table.search().select(["model"]).limit(None).to_arrow().column("model")
            found = frozenset(str(m) for m in pc.unique(column).to_pylist() if m is not None)
        self._models_cache = (now, version, found)
        return found

    def has_vector_index(self) -> bool:
        if self._has_vector_index is None:
            with _translated("list indexes"):
                self._has_vector_index = any(
                    tuple(ix.columns) == ("vector",) for ix in self._table.list_indices()
                )
        return self._has_vector_index

    def _query_vector(self, vector: np.ndarray) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1 or q.shape[0] != self.dim:
            raise ConfigError(
                f"query vector has shape {tuple(q.shape)}; collection {self.collection!r} "
                f"holds {self.dim}-dimensional vectors"
            )
        if not np.all(np.isfinite(q)) or not np.any(q):
            raise ConfigError("query vector must be finite and non-zero")
        return q

    def _fetch(
        self, q: np.ndarray, limit: int, sql: str | None, max_distance: float | None
    ) -> list[Hit]:
        indexed = self.has_vector_index()
        # Refining re-ranks candidates with exact vectors; without it LanceDB reports the
        # index's own distance (squared L2 of normalised vectors), not cosine distance.
        refine = max(1, self.refine_factor or 1)

        def shape(query: Any) -> Any:
            # The same calls exist on the sync builder and the async query.
            query = query.distance_type("cosine")
            if indexed:
                query = query.nprobes(self.nprobes).refine_factor(refine)
            if sql:
                query = query.where(sql)  # a prefilter: filter first, then rank
            if max_distance is not None:
                query = query.distance_range(upper_bound=max_distance)
            return query.limit(limit).select([*_HIT_COLUMNS, "_distance"])

        with _translated(f"search {self.collection!r}"):
            if _ONE_HOP is not None and hasattr(self._table, "_table"):
                inner = self._table._table

                async def run() -> pa.Table:
                    return await shape(inner.query().nearest_to(q).column("vector")).to_arrow()

                table = _ONE_HOP.run(run())
            else:
                table = shape(self._table.search(q, vector_column_name="vector")).to_arrow()
            return _hits_from_arrow(table)

    def _search(
        self, q: np.ndarray, k: int, pred: Predicate, max_distance: float | None = None
    ) -> list[Hit]:
        """Top-``k`` rows passing the predicate, over-fetching while the Python check drops rows."""
        fetch = k
        while True:
            raw = self._fetch(q, fetch, pred.sql, max_distance)
            hits = [h for h in raw if not pred.post or _hit_matches(h, pred.post)]
            if len(hits) >= k or len(raw) < fetch:
                return hits[:k]
            fetch *= 4

    def search(self, vector: np.ndarray, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` nearest rows by cosine similarity (``score = 1 - cosine distance``)."""
        if k <= 0:
            return []
        q = self._query_vector(vector)
        snapshot = None if where else self._snapshot()
        if snapshot is not None:
            return _hits_from_memory(snapshot, *snapshot.top(q, k))
        return self._search(q, k, translate_where(where))

    def range_search(
        self, vector: np.ndarray, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        """Every row whose score is within ``beta`` of the best score (DIPR), at most ``limit``."""
        if beta < 0 or math.isnan(beta):
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if limit <= 0:
            return []
        q = self._query_vector(vector)
        snapshot = None if where else self._snapshot()
        if snapshot is not None:
            return _hits_from_memory(snapshot, *snapshot.within(q, beta, limit))
        pred = translate_where(where)
        first = self._search(q, min(limit, _RANGE_FIRST_PAGE), pred)
        if not first:
            return []
        best = first[0].score
        if len(first) < min(limit, _RANGE_FIRST_PAGE) or first[-1].score < best - beta:
            return dipr_cut(first, beta)[:limit]
        # The first page is all inside the range: fetch up to ``limit``. Without an ANN index
        # LanceDB can bound the exact cosine distance itself (a hair of slack: dipr_cut makes
        # the exact cut); an index applies the bound to its own approximate distance, so there
        # the top ``limit`` are fetched and cut here.
        bound = None if self.has_vector_index() else 1.0 - (best - beta) + 1e-6
        return dipr_cut(self._search(q, limit, pred, max_distance=bound), beta)[:limit]

    def answers_from_memory(self, where: Where | None = None) -> bool:
        """Whether a search now would be answered from the in-memory snapshot, without I/O.

        A server calls this to run such a search (well under a millisecond) on its event loop
        instead of handing it to a worker thread.
        """
        return (
            not where
            and self._resident is not None
            and time.monotonic() - self._resident_checked < self._version_ttl
        )

    def _snapshot(self) -> ResidentSnapshot | None:
        """The in-memory snapshot of the current version, (re)loaded when allowed; else ``None``.

        The version is compared at most once a second (as ``models()`` does), or every
        ``refresh_interval`` when that is shorter: another process's writes are only seen that
        often anyway, and this store's own writes drop the snapshot at once.
        """
        if self.memory_search_bytes <= 0 or self._closed:
            return None
        now = time.monotonic()
        current = self._resident
        if current is not None and now - self._resident_checked < self._version_ttl:
            return current
        with self._resident_lock:
            current = self._resident
            if current is not None and now - self._resident_checked < self._version_ttl:
                return current
            version = self.version
            self._resident_checked = now
            if current is not None and current.version == version:
                return current
            self._resident = None
            if now - self._resident_built < _RESIDENT_REBUILD_S:
                return None  # a stream of writes: do not reload on every version
            too_big = self._resident_too_big
            if too_big is not None and too_big[0] == version:
                return None
            with _translated("count rows"):
                rows = int(self._table.count_rows())
            if rows * self.dim * 4 > self.memory_search_bytes or (
                too_big is not None and rows >= too_big[1]
            ):
                self._resident_too_big = (version, rows)
                return None
            with _translated(f"load {self.collection!r} into memory"):
                table = self._table.to_arrow().select([*_HIT_COLUMNS, "vector", "model"])
            snapshot = ResidentSnapshot.build(version, table)
            self._resident_built = now
            if snapshot.nbytes > self.memory_search_bytes:
                self._resident_too_big = (version, rows)
                log.debug(
                    "%r needs %d bytes in memory, more than memory_search_bytes=%d",
                    self.collection,
                    snapshot.nbytes,
                    self.memory_search_bytes,
                )
                return None
            log.debug("%r (%d rows) searched from memory", self.collection, len(snapshot))
            self._resident = snapshot
            return snapshot

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock. Safe to call twice."""
        self._closed = True
        self._resident = None
        self._lock.release()

    def __enter__(self) -> LanceDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LanceDBStore({self.uri!r}, collection={self.collection!r}, dim={self.dim}, mode={self.mode!r})"


def _hits_from_memory(
    snapshot: ResidentSnapshot, indices: np.ndarray, scores: np.ndarray
) -> list[Hit]:
    rows = snapshot.records(indices)
    return [_hit_from_row(row, float(s)) for row, s in zip(rows, scores.tolist(), strict=True)]


def _table_names(db: Any) -> set[str]:
    names: set[str] = set()
    token: str | None = None
    while True:  # list_tables pages its answer
        page = db.list_tables(page_token=token)
        names.update(page.tables)
        token = page.page_token
        if not token:
            return names


def _hit_matches(hit: Hit, where: Mapping[str, Any]) -> bool:
    return matches({"metadata": hit.metadata}, where)


__all__ = [
    "DEFAULT_PATH",
    "LanceDBStore",
    "OptimizeReport",
    "Predicate",
    "path_of",
    "records_to_arrow",
    "sql_string",
    "table_schema",
    "translate_where",
]
