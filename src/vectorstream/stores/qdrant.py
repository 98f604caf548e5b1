"""Qdrant adapter: a server (``qdrant://HOST:PORT``), local mode (``qdrant:PATH``) or Qdrant Edge
(``qdrant-edge:PATH``, an in-process shard from ``qdrant-edge-py``).

Qdrant point ids must be integers or UUIDs, so each record is stored under the UUID5 of its id
and the id itself is kept in the payload (``vs_id``); the other payload fields are the usual
ones (``text``, ``source``, ``page``, …), so Qdrant's own clients and dashboard show what we wrote.
Range search is native: a ``score_threshold`` of ``best - beta``.

A collection holds one embedding kind, each in Qdrant's own form (qdrant-client's server and
local mode; a Qdrant Edge shard holds dense vectors only):

* ``dense``: the unnamed vector, Cosine distance (the score is the cosine similarity).
* ``multivector``: the unnamed vector with a ``max_sim`` multivector comparator and the Cosine
  distance: the score is MaxSim.
* ``sparse``: a named sparse vector ``sparse`` (no dense vector); the score is the dot product.
  Qdrant does not keep a vocabulary size, so the collection's metadata holds it
  (``vectorstream.dim``; a server too old for collection metadata leaves it unchecked).

Side tables (the manifest) are collections ``<collection>__vs_<name>`` without vectors
(``_side_collections``); with Qdrant Edge, SQLite files in the shard's folder (``_qdrant_edge``).
Local mode serves a folder to one client at a time, readers included: a second process is told
to run a Qdrant server (``qdrant://HOST:PORT``). Readers (``mode="r"``) never take the Edge
writer lock, and their side tables refuse writes.

The backend a URI names and the error translation are ``_qdrant_conn`` (qdrant-client in
``_qdrant_client``, Qdrant Edge in ``_qdrant_edge``); the kinds' vector and query forms
``_qdrant_kinds``; filters ``_qdrant_filter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from .._dipr import threshold
from .._vectors import embedding_width
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    ID_FIELD,
    check_delete,
    check_k,
    check_range,
    hit_of,
    last_wins,
    payload_of,
    pop_mode,
    settled_dim,
    uuid_for,
)
from ._flock import WriterLock
from ._kinds import check_kind, refuse_kind, settle_kind
from ._qdrant_conn import open_backend, translate
from ._qdrant_edge import EdgeBackend
from ._qdrant_filter import qdrant_filter
from ._qdrant_kinds import ALL_KINDS, query_form, record_vectors
from ._records import kind_problems, rejected_error, split_rejected
from ._side_collections import ReadOnlySideTable, refuse_side_marker, side_collection_name
from .base import Query, SideTable, StoreCapabilities, Where


class QdrantStore:
    """A Qdrant collection as a ``VectorStore``."""

    capabilities = StoreCapabilities(kinds=ALL_KINDS, filters=True, range_search=True)

    def __init__(
        self,
        uri: str,
        collection: str,
        backend: Any,
        *,
        hnsw_ef: int = 128,
        readonly: bool = False,
        kind: EmbeddingKind = "dense",
    ) -> None:
        refuse_side_marker(collection, "Qdrant")
        self.uri = uri
        self.collection = collection
        self._b = backend
        self.hnsw_ef = hnsw_ef
        self.readonly = readonly  # mode="r": no writer lock, and side tables refuse writes
        # What this form of Qdrant can hold (an Edge shard: dense only).
        self.capabilities = StoreCapabilities(kinds=backend.kinds, filters=True, range_search=True)
        if kind not in backend.kinds:
            raise refuse_kind("Qdrant Edge", kind, sorted(backend.kinds))
        self.kind: EmbeddingKind = kind  # read back from the collection when it exists
        self.dim: int | None = None
        self._exists = False
        self._lock: WriterLock | None = None
        self._m_hnsw = 16
        self._ef_construct = 100

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> QdrantStore:
        """``qdrant://HOST:PORT``, ``qdrant:PATH`` (local mode), ``qdrant::memory:``, ``qdrant-edge:PATH``."""
        mode = pop_mode(options)
        raw_kind = options.pop("kind", None)
        kind = None if raw_kind is None else check_kind(raw_kind)
        hnsw_ef = int(options.pop("hnsw_ef", 128))
        hnsw_m = int(options.pop("m", 16))
        ef_construct = int(options.pop("ef_construct", 100))
        backend, lock = open_backend(uri, collection, mode, options)
        try:
            store = cls(
                uri,
                collection,
                backend,
                hnsw_ef=hnsw_ef,
                readonly=mode == "r",
                kind=kind or "dense",
            )
        except BaseException:
            with contextlib.suppress(Exception):
                backend.close()
            if lock is not None:
                lock.release()
            raise
        store._m_hnsw, store._ef_construct = hnsw_m, ef_construct
        store._lock = lock
        try:
            store._open(dim, kind)
        except BaseException:
            store.close()
            raise
        return store

    def _call(self, action: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise translate(exc, action) from exc

    def _open(self, dim: int | None, kind: EmbeddingKind | None) -> None:
        found = self._call("read the collection", self._b.describe)
        if found is not None:
            stored_kind, stored = found
            what = f"Qdrant collection {self.collection!r}"
            self.kind = settle_kind(what, stored_kind, kind)
            self.dim = settled_dim(what, stored, dim)
            self._exists = True
        elif dim is not None:
            self._create(dim)

    def _create(self, dim: int) -> None:
        self._call(
            "create the collection",
            self._b.create,
            self.kind,
            dim,
            self._m_hnsw,
            self._ef_construct,
        )
        self.dim = dim
        self._exists = True

    def _filter(self, where: Where | None, source: str | None = None) -> Any:
        return qdrant_filter(self._b.m, where, source)

    # -- protocol ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the collection's (and, for
        sparse and multivector collections, invalid ones) are set aside: the others are written,
        then ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        batch = last_wins(records)
        # Dense vectors are checked by Qdrant itself.
        batch, rejected = split_rejected(
            batch, kind_problems(batch, self.dim, self.kind, nonzero=True)
        )
        if batch and not self._exists:
            self._create(embedding_width(batch[0].embedding))
        if batch:
            ids = [uuid_for(r.id) for r in batch]
            payloads = [{ID_FIELD: r.id, **payload_of(r)} for r in batch]
            vectors = record_vectors(self.kind, self._b, batch)
            self._call("upsert records", self._b.upsert, ids, vectors, payloads)
        if rejected:
            raise rejected_error(rejected, len(records), f"Qdrant collection {self.collection!r}")

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        check_delete(ids, source)
        if not self._exists:
            return 0
        if ids is not None:
            uuids = [uuid_for(i) for i in ids]
            if not uuids:
                return 0
            n = self._call("count records", self._b.existing, uuids)
            self._call("delete records", self._b.delete_ids, uuids)
            return int(n)
        flt = self._filter(None, source)
        n = self._call("count records", self._b.count, flt)
        self._call("delete records", self._b.delete_filter, flt)
        return int(n)

    def _query(
        self,
        form: tuple[Any, str | None, float],
        limit: int,
        where: Where | None,
        cut: float | None,
    ) -> list[Hit]:
        query, using, _ = form
        flt = self._filter(where)
        ef = max(self.hnsw_ef, limit)
        points = self._call("search", self._b.query, query, limit, flt, cut, ef, using)
        return [hit_of(str(p.payload[ID_FIELD]), p.score, p.payload) for p in points]

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        check_k(k)
        form = query_form(self.kind, self.dim, self._b, vector)
        if not self._exists:
            return []
        return self._query(form, k, where, None)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        form = query_form(self.kind, self.dim, self._b, vector)
        if not self._exists:
            return []
        best = self._query(form, 1, where, None)
        if not best:
            return []
        # Qdrant's score_threshold is the native range bound: everything scoring >= best - beta
        # (none below the lowest score there is: then there is no bound, and beta may be
        # infinite).
        cut = threshold(best[0].score, beta)
        return self._query(form, limit, where, cut if cut > form[2] else None)

    def ids(self, source: str | None = None) -> set[str]:
        if not self._exists:
            return set()
        points = self._call("list ids", self._b.scroll, self._filter(None, source))
        return {str(p.payload[ID_FIELD]) for p in points}

    def count(self) -> int:
        if not self._exists:
            return 0
        return int(self._call("count records", self._b.count, None))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: the collection ``<collection>__vs_<name>`` (no vectors), or
        with Qdrant Edge a SQLite file in the shard's folder."""
        table_name = side_collection_name(self.collection, name, max_bytes=255)
        if isinstance(self._b, EdgeBackend):
            table = self._b.side_table(name, self.readonly)
        else:
            table = self._b.side_table(table_name, self._call)
        if self.readonly:
            return ReadOnlySideTable(table, f"Qdrant collection {self.collection!r}")
        return table

    def flush(self) -> None:
        self._call("flush", self._b.flush)

    def close(self) -> None:
        try:
            self._call("close", self._b.close)
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["QdrantStore"]
