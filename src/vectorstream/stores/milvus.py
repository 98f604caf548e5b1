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

The client, Milvus Lite's server and error translation are ``_milvus_conn``; the schema
``_milvus_schema``; rows, hits and filter expressions ``_milvus_records``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._dipr import threshold
from .._vectors import embedding_width
from ..errors import ConfigError
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    as_query,
    check_delete,
    check_k,
    check_range,
    hit_of,
    last_wins,
    pop_mode,
    require,
    settled_dim,
)
from ._flock import WriterLock
from ._kinds import check_kind, query_embedding, refuse_kind, settle_kind
from ._milvus_conn import (
    connect,
    lite_closed,
    lite_opened,
    needs_load,
    release_lite,
    translate,
)
from ._milvus_records import (
    filter_expr,
    hit_payload,
    ids_expr,
    output_fields,
    row_of,
    sparse_value,
)
from ._milvus_schema import (
    TEXT_MAX,
    add_section_field,
    create_arguments,
    described,
    has_section_field,
    metric,
)
from ._records import kind_problems, rejected_error, split_rejected
from ._side_collections import (
    MilvusSideCollection,
    ReadOnlySideTable,
    refuse_side_marker,
    side_collection_name,
)
from .base import Query, SideTable, StoreCapabilities, Where


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
        pymilvus = require("pymilvus", "pymilvus", "milvus")
        index_type = str(options.pop("index_type", "AUTOINDEX"))
        conn = connect(pymilvus, uri, mode, options)
        store = cls(
            uri,
            collection,
            conn.client,
            index_type=index_type,
            readonly=mode == "r",
            kind=kind or "dense",
        )
        store._lock = conn.lock
        if conn.lite_path is not None:
            store._lite_path = conn.lite_path
            lite_opened(conn.lite_path)
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
            if not needs_load(exc):
                raise translate(exc, action) from exc
        # A restarted server comes back with its collections released: load and try once more.
        try:
            self._client.load_collection(self.collection)
            return fn(*args, **kwargs)
        except Exception as exc:
            raise translate(exc, action) from exc

    def _open(self, dim: int | None, kind: EmbeddingKind | None) -> None:
        c = self._client
        if self._call("read the collection", c.has_collection, self.collection):
            desc = self._call("describe the collection", c.describe_collection, self.collection)
            stored_kind, stored = described(desc)
            what = f"Milvus collection {self.collection!r}"
            self.kind = settle_kind(what, stored_kind, kind)
            self.dim = settled_dim(what, stored, dim)
            self._exists = True
            self._section_field = has_section_field(desc)
            if not self._section_field and not self.readonly:
                # Milvus Lite answers "not implemented": there it stays in the metadata.
                self._section_field = self._lite_path is None and add_section_field(
                    c, self.collection
                )
            self._call("load the collection", c.load_collection, self.collection)
        elif dim is not None:
            self._create(dim)

    def _create(self, dim: int) -> None:
        c = self._client
        arguments = create_arguments(c, self.kind, dim, self.index_type)
        self._call("create the collection", c.create_collection, self.collection, **arguments)
        self.dim = dim
        self._exists = True
        self._section_field = True

    # -- protocol ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the collection's (and, in a
        sparse one, invalid ones) are set aside: the others are written, then
        ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        batch = last_wins(records)
        batch, rejected = split_rejected(batch, self._problems(batch))
        if batch and not self._exists:
            self._create(embedding_width(batch[0].embedding))
        if batch:
            rows = [row_of(r, self._section_field) for r in batch]
            self._call("upsert records", self._client.upsert, self.collection, rows)
        if rejected:
            raise rejected_error(rejected, len(records), f"Milvus collection {self.collection!r}")

    def _problems(self, batch: list[Record]) -> list[str | None]:
        # Dense vectors are checked by Milvus itself; it cannot store an all-zero sparse one.
        problems = kind_problems(batch, self.dim, self.kind)
        if self.kind == "dense":
            return problems
        for i, r in enumerate(batch):
            sv = r.embedding.sparse
            if problems[i] is None and sv is not None and not np.any(sv.values):
                problems[i] = "sparse vector has no non-zero weight (Milvus cannot store it)"
        return problems

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        check_delete(ids, source)
        if not self._exists:
            return 0
        if ids is not None:
            ids = list(ids)
            if not ids:
                return 0
            # Milvus counts requested ids as deleted whether they existed or not.
            expr = ids_expr(ids)
        else:
            expr = filter_expr(None, source)
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
        return sparse_value(sv)

    def _search(self, q: Any, limit: int, where: Where | None, params: dict[str, Any]) -> list[Hit]:
        if not self._exists:
            return []
        res = self._call(
            "search",
            self._client.search,
            self.collection,
            data=[q],
            limit=limit,
            filter=filter_expr(where),
            output_fields=output_fields(self._section_field),
            search_params={"metric_type": metric(self.kind), "params": params},
            anns_field="vector",
        )
        hits = []
        for h in res[0]:
            entity = h.get("entity", h)
            hits.append(hit_of(str(h["id"]), float(h["distance"]), hit_payload(entity)))
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
        expr = filter_expr(None, source) if source is not None else 'id != ""'
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
            translate,
            needs_load,
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
        if self._lite_path is not None and lite_closed(self._lite_path):
            self._call("stop Milvus Lite", release_lite, self._lite_path)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MilvusStore"]
