"""Milvus adapter (pymilvus ``MilvusClient``): a Milvus Lite file (``milvus:PATH.db``) or a server
(``milvus://HOST:PORT``, e.g. one started with ``milvus-lite server``).

Collection schema, in Milvus' usual shape so Attu and pymilvus read it: ``id`` VARCHAR primary
key (our id, no mapping needed), ``vector`` FLOAT_VECTOR(dim) with a COSINE index, ``text``,
``source``, ``model`` VARCHAR, ``page`` (−1 for none), ``start_offset``, ``end_offset``,
``chunk_index``, ``section_index`` INT64, ``headings`` and ``metadata`` JSON. ``upsert`` replaces
by primary key. Range search is native (``radius``/``range_filter`` search parameters).

A sparse collection (``kind="sparse"``) holds ``vector`` as a SPARSE_FLOAT_VECTOR with a
``SPARSE_INVERTED_INDEX`` and the inner product (IP) as its score; Milvus keeps no vocabulary
size, so the collection's properties hold it (``vectorstream.dim``). Milvus refuses a sparse
vector without a non-zero weight: such records are set aside (``RecordRejectedError``).
Multivector collections are refused: Milvus has no MaxSim over a field of this layout.

``section_index`` came later than the other fields. A writer opening a collection made before it
asks a Milvus server to add the field (nullable, default 0); Milvus Lite cannot add fields to a
collection (and older servers may not either), so there the adapter keeps each record's
``section_index`` inside its ``metadata`` JSON under the reserved key ``__vs_section_index``,
which reads strip again. Rows written before either read as section 0; a reader (``mode="r"``)
changes nothing.

Side tables (the manifest) are collections ``<collection>__vs_<name>`` beside this one
(``_side_collections``). Milvus Lite serves a file from inside one process, readers included:
a second process is told to serve it and use ``milvus://HOST:PORT``. Readers (``mode="r"``)
never take the writer lock, and their side tables refuse writes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._dipr import threshold
from .._vectors import embedding_width
from ..errors import (
    ConfigError,
    RecordRejectedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    as_query,
    check_k,
    check_range,
    hit_of,
    host_port,
    last_wins,
    pop_mode,
    require,
    where_items,
)
from ._flock import WriterLock
from ._kinds import DIM_KEY, KIND_KEY, check_kind, query_embedding, refuse_kind, settle_kind
from ._records import split_rejected, vector_problems
from ._side_collections import (
    MilvusSideCollection,
    ReadOnlySideTable,
    refuse_side_marker,
    side_collection_name,
)
from .base import Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.milvus")

TEXT_MAX = 65_535  # Milvus' VARCHAR limit, in bytes
SHORT_MAX = 4_096
# Stores open on each Milvus Lite file in this process: the last to close stops its server.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()

OUTPUT = [
    "text",
    "source",
    "page",
    "start_offset",
    "end_offset",
    "chunk_index",
    "headings",
    "metadata",
]
SECTION_INDEX = "section_index"
# Where a collection without the section_index field keeps it: inside the metadata JSON.
SECTION_KEY = "__vs_section_index"


def _translate(exc: Exception, action: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name in ("MilvusUnavailableException", "RpcError", "_InactiveRpcError") or isinstance(
        exc, ConnectionError | TimeoutError
    ):
        return StoreUnavailableError(f"Milvus unavailable while trying to {action}: {text}")
    low = text.lower()
    if name in ("DataNotMatchException", "DataTypeNotMatchException", "ParamError") or any(
        w in low
        for w in ("dimension", "dim mismatch", "exceeds max length", "nan", "invalid input")
    ):
        return RecordRejectedError(f"Milvus rejected the records while trying to {action}: {text}")
    if "connect" in low or "unavailable" in low or "deadline exceeded" in low:
        return StoreUnavailableError(f"Milvus unavailable while trying to {action}: {text}")
    return StoreError(f"Milvus failed to {action}: {text}")


def _lite_held_elsewhere(target: str) -> bool:
    """Whether another process holds Milvus Lite's own lock on the data folder ``target``.

    Milvus Lite serves a file from inside one process and locks it (``flock`` on ``LOCK`` in
    the folder); when the lock is taken, pymilvus only says "Open local milvus failed".
    """
    with _LITE_LOCK:
        if target in _LITE_USERS:
            return False  # this process serves it (and so holds the lock)
    path = os.path.join(target, "LOCK")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _lite_locked(target: str) -> StoreLockedError:
    return StoreLockedError(
        f"another process holds the Milvus Lite file {target}; Milvus Lite serves a file to one "
        "process at a time, readers included: for concurrent access serve it (milvus-lite "
        f"server --data-dir {target} --port PORT, or use a Milvus server) and use "
        "milvus://HOST:PORT"
    )


def _needs_load(exc: Exception) -> bool:
    """Milvus' answer for a collection that exists but is not loaded (code 101)."""
    return getattr(exc, "code", None) == 101 or "call load()" in str(exc)


def _hit_payload(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity as ``hit_of`` reads it: ``section_index`` taken out of the metadata if there."""
    metadata = entity.get("metadata")
    if not isinstance(metadata, dict) or SECTION_KEY not in metadata:
        return entity
    metadata = dict(metadata)
    kept = metadata.pop(SECTION_KEY)
    return {**entity, "metadata": metadata, SECTION_INDEX: entity.get(SECTION_INDEX) or kept}


def _described(desc: dict[str, Any]) -> tuple[EmbeddingKind, int | None]:
    """The kind and width of a described collection (a sparse one's from its properties)."""
    from pymilvus import DataType

    field = next(f for f in desc["fields"] if f["name"] == "vector")
    if field["type"] == DataType.SPARSE_FLOAT_VECTOR:
        raw = (desc.get("properties") or {}).get(DIM_KEY)
        return "sparse", int(raw) if raw else None
    return "dense", int(field["params"]["dim"])


def _vector_value(r: Record) -> Any:
    """A record's vector as Milvus takes it (a sparse one as ``{term: weight}``, zeros left out)."""
    sv = r.embedding.sparse
    if sv is not None:
        return {int(i): float(v) for i, v in zip(sv.indices, sv.values, strict=True) if v}
    return np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist()


def _literal(value: Any) -> str:
    """A value as a Milvus expression literal (JSON quoting is valid Milvus string syntax)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


class MilvusStore:
    """A Milvus collection as a ``VectorStore``."""

    capabilities = StoreCapabilities(
        kinds=frozenset({"dense", "sparse"}), filters=True, range_search=True
    )

    def __init__(
        self,
        uri: str,
        collection: str,
        client: Any,
        *,
        index_type: str,
        readonly: bool = False,
        kind: EmbeddingKind = "dense",
    ) -> None:
        refuse_side_marker(collection, "Milvus")
        self.uri = uri
        self.collection = collection
        self._client = client
        self.kind: EmbeddingKind = kind  # read back from the collection when it exists
        self.dim: int | None = None
        self._exists = False
        self.index_type = index_type
        self.max_record_bytes = TEXT_MAX
        self._lite_path: str | None = None
        self._closed = False
        self._lock: WriterLock | None = None
        self.readonly = readonly  # mode="r": no writer lock, and side tables refuse writes
        # Whether the collection has the section_index field (one made before it may not).
        self._section_field = True

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> MilvusStore:
        mode = pop_mode(options)
        raw_kind = options.pop("kind", None)
        kind = None if raw_kind is None else check_kind(raw_kind)
        if kind is not None and kind not in cls.capabilities.kinds:
            raise refuse_kind("Milvus", kind, sorted(cls.capabilities.kinds))
        lock: WriterLock | None = None
        pymilvus = require("pymilvus", "pymilvus", "milvus")
        index_type = str(options.pop("index_type", "AUTOINDEX"))
        _, _, rest = uri.partition(":")
        if rest.startswith("//"):
            host, port = host_port(rest[2:], 19530)
            target = f"http://{host}:{port}"
            lite = False
        else:
            if not rest:
                raise ConfigError(
                    "milvus:PATH needs a file path ending in .db (or milvus://HOST:PORT)"
                )
            require("milvus_lite", "milvus-lite", "milvus")
            target = os.path.abspath(os.path.expanduser(rest))
            if not target.endswith(".db"):
                raise ConfigError(f"a Milvus Lite path must end in .db, got {rest!r}")
            lite = True
            if mode != "r":
                # Stores of one process share its Milvus Lite server: one writer among them.
                lock = WriterLock(Path(target + ".writer.lock"), f"Milvus Lite file {target}")
                try:
                    lock.acquire()
                except StoreLockedError as exc:
                    if _lite_held_elsewhere(target):
                        raise _lite_locked(target) from exc
                    raise
        try:
            client = pymilvus.MilvusClient(uri=target, **options)
        except Exception as exc:
            if lock is not None:
                lock.release()
            if lite and _lite_held_elsewhere(target):
                raise _lite_locked(target) from exc
            raise _translate(exc, f"connect to {uri!r}") from exc
        store = cls(
            uri,
            collection,
            client,
            index_type=index_type,
            readonly=mode == "r",
            kind=kind or "dense",
        )
        store._lock = lock
        if lite:
            store._lite_path = target
            with _LITE_LOCK:
                _LITE_USERS[target] = _LITE_USERS.get(target, 0) + 1
        try:
            store._open(dim, kind)
        except BaseException:
            store.close()
            raise
        return store

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _needs_load(exc):
                raise _translate(exc, action) from exc
        # A restarted server comes back with its collections released: load and try once more.
        try:
            self._client.load_collection(self.collection)
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _translate(exc, action) from exc

    def _open(self, dim: int | None, kind: EmbeddingKind | None) -> None:
        c = self._client
        if self._call("read the collection", c.has_collection, self.collection):
            desc = self._call("describe the collection", c.describe_collection, self.collection)
            stored_kind, stored = _described(desc)
            self.kind = settle_kind(f"Milvus collection {self.collection!r}", stored_kind, kind)
            if dim is not None and stored is not None and dim != stored:
                raise ConfigError(
                    f"Milvus collection {self.collection!r} holds vectors of dimension {stored}, not {dim}"
                )
            self.dim = stored if stored is not None else dim
            self._exists = True
            self._section_field = any(f["name"] == SECTION_INDEX for f in desc["fields"])
            if not self._section_field and not self.readonly:
                self._section_field = self._add_section_field()
            self._call("load the collection", c.load_collection, self.collection)
        elif dim is not None:
            self._create(dim)

    def _add_section_field(self) -> bool:
        """Add section_index to a collection made before it; whether the server could."""
        if self._lite_path is not None or not hasattr(self._client, "add_collection_field"):
            return False  # Milvus Lite answers "not implemented": keep it in the metadata
        from pymilvus import DataType

        try:
            self._client.add_collection_field(
                self.collection,
                field_name=SECTION_INDEX,
                data_type=DataType.INT64,
                nullable=True,  # Milvus adds fields to existing collections only nullable
                default_value=0,
            )
        except Exception as exc:  # the vendor boundary: an older server, a Lite server
            log.info(
                "Milvus could not add section_index to %r (%s); it is kept in the metadata",
                self.collection,
                exc,
            )
            return False
        log.info("added the section_index field to Milvus collection %r", self.collection)
        return True

    def _create(self, dim: int) -> None:
        from pymilvus import DataType

        c = self._client
        sparse = self.kind == "sparse"
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=SHORT_MAX)
        if sparse:
            schema.add_field("vector", DataType.SPARSE_FLOAT_VECTOR)
        else:
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
        schema.add_field("source", DataType.VARCHAR, max_length=SHORT_MAX)
        schema.add_field("model", DataType.VARCHAR, max_length=SHORT_MAX)
        for name in ("page", "start_offset", "end_offset", "chunk_index", SECTION_INDEX):
            schema.add_field(name, DataType.INT64)
        schema.add_field("headings", DataType.JSON)
        schema.add_field("metadata", DataType.JSON)
        index = c.prepare_index_params()
        if sparse:
            index.add_index(
                field_name="vector", index_type="SPARSE_INVERTED_INDEX", metric_type="IP"
            )
        else:
            index.add_index(field_name="vector", index_type=self.index_type, metric_type="COSINE")
        self._call(
            "create the collection",
            c.create_collection,
            self.collection,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
            # Milvus keeps no vocabulary size: the properties hold it (and the kind).
            properties={KIND_KEY: self.kind, DIM_KEY: str(dim)} if sparse else None,
        )
        self.dim = dim
        self._exists = True
        self._section_field = True

    def _expr(self, where: Where | None, source: str | None = None) -> str:
        items = where_items(where)
        if source is not None:
            items.append(("source", [source]))
        parts = []
        for key, values in items:
            if key.startswith("metadata."):
                # JSON paths take `==` but not `in` in every Milvus build (Lite refuses `in`).
                field = f"metadata[{_literal(key[9:])}]"
                parts.append("(" + " or ".join(f"{field} == {_literal(v)}" for v in values) + ")")
            else:
                parts.append(f"{key} in [{', '.join(_literal(v) for v in values)}]")
        return " and ".join(parts)

    # -- protocol ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the collection's (and, in a
        sparse one, invalid ones) are set aside: the others are written, then
        ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        batch, rejected = split_rejected(*self._checked(last_wins(records)))
        if batch and not self._exists:
            self._create(embedding_width(batch[0].embedding))
        if batch:
            rows = [self._row(r) for r in batch]
            self._call("upsert records", self._client.upsert, self.collection, rows)
        if rejected:
            raise RecordRejectedError(
                f"{len(rejected)} of {len(records)} records were rejected by Milvus collection "
                f"{self.collection!r}",
                rejected,
            )

    def _checked(self, batch: list[Record]) -> tuple[list[Record], list[str | None]]:
        if self.kind == "dense":  # dense vectors are checked by Milvus itself, as before
            return batch, [
                None
                if r.embedding.kind == "dense"
                else f"this collection holds dense embeddings, not {r.embedding.kind}"
                for r in batch
            ]
        problems = vector_problems(batch, self.dim, kind=self.kind)
        for i, r in enumerate(batch):
            sv = r.embedding.sparse
            if problems[i] is None and sv is not None and not np.any(sv.values):
                problems[i] = "sparse vector has no non-zero weight (Milvus cannot store it)"
        return batch, problems

    def _row(self, r: Record) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": r.id,
            "vector": _vector_value(r),
            "text": r.text,
            "source": r.source,
            "model": r.model,
            "page": -1 if r.page is None else r.page,
            "start_offset": r.start,
            "end_offset": r.end,
            "chunk_index": r.chunk_index,
            "headings": list(r.headings),
            "metadata": dict(r.metadata),
        }
        if self._section_field:
            row[SECTION_INDEX] = r.section_index
        else:
            row["metadata"][SECTION_KEY] = r.section_index
        return row

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
        if not self._exists:
            return 0
        if ids is not None:
            ids = list(ids)
            if not ids:
                return 0
            # Milvus counts requested ids as deleted whether they existed or not.
            expr = f"id in [{', '.join(_literal(i) for i in ids)}]"
        else:
            expr = self._expr(None, source)
        n = self._count(expr)
        self._call("delete records", self._client.delete, self.collection, filter=expr)
        return n

    def _query_value(self, vector: Query) -> Any:
        """The query as Milvus takes it: a list of floats, or a sparse ``{term: weight}``."""
        if self.kind == "dense":
            return as_query(vector, self.dim).tolist()
        sv = query_embedding(vector, self.kind, self.dim).sparse
        if sv is None:  # a Milvus collection is dense or sparse
            raise ConfigError(f"Milvus cannot search {self.kind} embeddings")
        return {int(i): float(v) for i, v in zip(sv.indices, sv.values, strict=True) if v}

    def _search(self, q: Any, limit: int, where: Where | None, params: dict[str, Any]) -> list[Hit]:
        if not self._exists:
            return []
        metric = "IP" if self.kind == "sparse" else "COSINE"
        res = self._call(
            "search",
            self._client.search,
            self.collection,
            data=[q],
            limit=limit,
            filter=self._expr(where),
            output_fields=[*OUTPUT, SECTION_INDEX] if self._section_field else OUTPUT,
            search_params={"metric_type": metric, "params": params},
            anns_field="vector",
        )
        hits = []
        for h in res[0]:
            entity = h.get("entity", h)
            hits.append(hit_of(str(h["id"]), float(h["distance"]), _hit_payload(entity)))
        return hits

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` best rows: cosine similarity (dense) or inner product (sparse; only rows
        sharing a term with the query)."""
        check_k(k)
        return self._search(self._query_value(vector), k, where, {})

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        q = self._query_value(vector)
        best = self._search(q, 1, where, {})
        if not best:
            return []
        if self.kind == "sparse":
            # Inner products have no bound; with IP Milvus keeps scores above the radius.
            cut = threshold(best[0].score, beta)
            if math.isinf(cut):
                return self.search(vector, limit, where)
            params: dict[str, Any] = {"radius": cut - 1e-6}
        else:
            # Milvus range search with COSINE keeps radius < score <= range_filter.
            # Cosine scores are >= -1, so a wider range (beta may be infinite) is all of them.
            radius = max(threshold(best[0].score, beta), -1.0) - 1e-6
            params = {"radius": radius, "range_filter": 1.0 + 1e-6}
        hits = self._search(q, limit, where, params)
        return sorted(hits, key=lambda h: -h.score)

    def _count(self, expr: str) -> int:
        rows = self._call(
            "count records",
            self._client.query,
            self.collection,
            filter=expr,
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self, source: str | None = None) -> set[str]:
        if not self._exists:
            return set()
        expr = self._expr(None, source) if source is not None else 'id != ""'
        out: set[str] = set()
        it = self._call(
            "list ids",
            self._client.query_iterator,
            self.collection,
            batch_size=1000,
            filter=expr,
            output_fields=["id"],
        )
        try:
            while True:
                page = self._call("list ids", it.next)
                if not page:
                    break
                out.update(str(row["id"]) for row in page)
        finally:
            it.close()
        return out

    def count(self) -> int:
        if not self._exists:
            return 0
        return self._count("")

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: the Milvus collection ``<collection>__vs_<name>``."""
        table = MilvusSideCollection(
            self._client,
            side_collection_name(self.collection, name, max_bytes=255),
            _translate,
            _needs_load,
        )
        if self.readonly:
            return ReadOnlySideTable(table, f"Milvus collection {self.collection!r}")
        return table

    def flush(self) -> None:
        if self._exists:
            self._call("flush", self._client.flush, self.collection)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _close(self) -> None:
        self._call("close", self._client.close)
        if self._lite_path is None:
            return
        with _LITE_LOCK:
            left = _LITE_USERS.get(self._lite_path, 1) - 1
            if left > 0:
                _LITE_USERS[self._lite_path] = left
                return
            _LITE_USERS.pop(self._lite_path, None)
        # Milvus Lite serves a file from a thread in this process; stopping it closes the file
        # cleanly, so another process can open it and nothing waits for interpreter exit.
        from milvus_lite.server_manager import server_manager_instance

        self._call("stop Milvus Lite", server_manager_instance.release_server, self._lite_path)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MilvusStore"]
