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
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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
    ID_FIELD,
    as_query,
    check_k,
    check_range,
    hit_of,
    host_port,
    last_wins,
    payload_of,
    pop_mode,
    require,
    uuid_for,
    where_items,
)
from ._flock import WriterLock
from ._kinds import DIM_KEY, KIND_KEY, check_kind, query_embedding, refuse_kind, settle_kind
from ._qdrant_edge import EdgeBackend
from ._records import split_rejected, vector_problems
from ._side_collections import (
    QdrantSideCollection,
    ReadOnlySideTable,
    refuse_side_marker,
    side_collection_name,
)
from .base import Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.qdrant")

SCROLL_PAGE = 1000
SPARSE_NAME = "sparse"  # the named sparse vector of a sparse collection
ALL_KINDS: frozenset[EmbeddingKind] = frozenset({"dense", "sparse", "multivector"})


def _translate(exc: Exception, action: str) -> StoreError:
    """Map qdrant-client / qdrant-edge / transport errors to ours."""
    if isinstance(exc, StoreError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name == "UnexpectedResponse":
        status = int(getattr(exc, "status_code", 0) or 0)
        if status in (400, 422):
            return RecordRejectedError(f"Qdrant rejected the request to {action}: {text}")
        if status in (408, 429) or status >= 500:
            return StoreUnavailableError(
                f"Qdrant unavailable ({status}) while trying to {action}: {text}"
            )
        return StoreError(f"Qdrant failed to {action} ({status}): {text}")
    if name in (
        "ResponseHandlingException",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RpcError",
    ):
        return StoreUnavailableError(f"Qdrant unavailable while trying to {action}: {text}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return StoreUnavailableError(f"Qdrant unavailable while trying to {action}: {text}")
    if "already accessed by another instance" in text:
        # Local mode serves a folder to one client at a time, readers included.
        return StoreLockedError(
            f"another process (or another open store in this one) holds the Qdrant local-mode "
            f"folder while trying to {action}; local mode serves a folder to one client at a "
            "time, readers included: for concurrent access run a Qdrant server and use "
            "qdrant://HOST:PORT"
        )
    if isinstance(exc, ValueError) and (
        "dimension" in text.lower() or "wrong input" in text.lower()
    ):
        return RecordRejectedError(f"Qdrant rejected the records while trying to {action}: {text}")
    return StoreError(f"Qdrant failed to {action}: {text}")


class _ClientBackend:
    """qdrant-client, against a server or its local (embedded) mode."""

    def __init__(self, client: Any, models: Any, collection: str, *, server: bool) -> None:
        self.client = client
        self.m = models
        self.collection = collection
        self.server = server

    kinds = ALL_KINDS

    def describe(self) -> tuple[EmbeddingKind, int | None] | None:
        """The collection's kind and width, or ``None`` when it does not exist."""
        if not self.client.collection_exists(self.collection):
            return None
        config = self.client.get_collection(self.collection).config
        params = config.params
        if SPARSE_NAME in (params.sparse_vectors or {}):
            raw = (getattr(config, "metadata", None) or {}).get(DIM_KEY)
            return "sparse", int(raw) if raw else None
        vectors = params.vectors
        if not isinstance(vectors, self.m.VectorParams):
            raise StoreError(
                f"Qdrant collection {self.collection!r} has named vectors "
                f"{sorted(vectors or {})}; it was not made by vectorstream"
            )
        if vectors.multivector_config is not None:
            return "multivector", int(vectors.size)
        return "dense", int(vectors.size)

    def create(self, kind: EmbeddingKind, dim: int, hnsw_m: int, ef_construct: int) -> None:
        m = self.m
        hnsw = m.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construct)
        if kind == "sparse":
            self.client.create_collection(
                self.collection,
                vectors_config={},
                sparse_vectors_config={SPARSE_NAME: m.SparseVectorParams()},
                hnsw_config=hnsw,
                metadata={KIND_KEY: kind, DIM_KEY: dim},
            )
        else:
            multi = (
                m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
                if kind == "multivector"
                else None
            )
            self.client.create_collection(
                self.collection,
                vectors_config=m.VectorParams(
                    size=dim, distance=m.Distance.COSINE, multivector_config=multi
                ),
                hnsw_config=hnsw,
            )
        if self.server:
            # Local mode has no payload indexes (and warns); a server uses them for filters.
            for field in ("source", "model"):
                self.client.create_payload_index(
                    self.collection, field, m.PayloadSchemaType.KEYWORD
                )

    def upsert(self, ids: list[str], vectors: Any, payloads: list[dict[str, Any]]) -> None:
        batch = self.m.Batch(ids=ids, vectors=vectors, payloads=payloads)
        self.client.upsert(self.collection, points=batch, wait=True)

    def sparse(self, indices: list[int], values: list[float]) -> Any:
        return self.m.SparseVector(indices=indices, values=values)

    def delete_ids(self, ids: list[str]) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.PointIdsList(points=ids), wait=True
        )

    def delete_filter(self, flt: Any) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.FilterSelector(filter=flt), wait=True
        )

    def existing(self, ids: list[str]) -> int:
        return len(
            self.client.retrieve(self.collection, ids=ids, with_payload=False, with_vectors=False)
        )

    def query(
        self,
        vector: Any,
        limit: int,
        flt: Any,
        threshold: float | None,
        ef: int,
        using: str | None = None,
    ) -> list[Any]:
        # Local mode searches exactly and warns about search parameters; a server uses hnsw_ef.
        params = self.m.SearchParams(hnsw_ef=ef) if self.server else None
        res = self.client.query_points(
            self.collection,
            query=vector,
            using=using,
            limit=limit,
            query_filter=flt,
            score_threshold=threshold,
            with_payload=True,
            search_params=params,
        )
        return list(res.points)

    def scroll(self, flt: Any) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            page, offset = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=[ID_FIELD],
                with_vectors=False,
            )
            out.extend(page)
            if offset is None:
                return out

    def count(self, flt: Any) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    def flush(self) -> None:
        """Writes use ``wait=True``: acknowledged means applied."""

    def close(self) -> None:
        self.client.close()

    def side_table(self, name: str, call: Any) -> SideTable:
        return QdrantSideCollection(self.client, self.m, name, call)


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
        lock: WriterLock | None = None
        hnsw_ef = int(options.pop("hnsw_ef", 128))
        hnsw_m = int(options.pop("m", 16))
        ef_construct = int(options.pop("ef_construct", 100))
        scheme, _, rest = uri.partition(":")
        scheme = scheme.lower()
        try:
            if scheme == "qdrant-edge":
                edge = require("qdrant_edge", "qdrant-edge-py", "qdrant")
                if not rest:
                    raise ConfigError("qdrant-edge:PATH needs a directory")
                root = os.path.expanduser(rest.removeprefix("//"))
                if mode != "r":
                    # An Edge shard has one writer: a second one fails now, not corrupts later.
                    lock = WriterLock(
                        Path(root) / f"{collection}.writer.lock",
                        f"Qdrant Edge collection {collection!r} at {root}",
                    )
                    lock.acquire()
                backend: Any = EdgeBackend(edge, root, collection)
            else:
                qc = require("qdrant_client", "qdrant-client", "qdrant")
                models = require("qdrant_client.models", "qdrant-client", "qdrant")
                if rest.startswith("//"):
                    host, port = host_port(rest[2:], 6333)
                    # The version check runs in a background thread that only logs; skip it.
                    options.setdefault("check_compatibility", False)
                    client = qc.QdrantClient(host=host, port=port, **options)
                    backend = _ClientBackend(client, models, collection, server=True)
                else:
                    if not rest:
                        raise ConfigError("qdrant:PATH needs a directory (or qdrant://HOST:PORT)")
                    if rest == ":memory:":  # qdrant::memory: — local mode without persistence
                        client = qc.QdrantClient(location=":memory:", **options)
                    else:
                        client = qc.QdrantClient(path=os.path.expanduser(rest), **options)
                    backend = _ClientBackend(client, models, collection, server=False)
        except (ConfigError, StoreError, ImportError):
            if lock is not None:
                lock.release()
            raise
        except Exception as exc:
            if lock is not None:
                lock.release()
            raise _translate(exc, f"open {uri!r}") from exc
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
            raise _translate(exc, action) from exc

    def _open(self, dim: int | None, kind: EmbeddingKind | None) -> None:
        found = self._call("read the collection", self._b.describe)
        if found is not None:
            stored_kind, stored = found
            self.kind = settle_kind(f"Qdrant collection {self.collection!r}", stored_kind, kind)
            if dim is not None and stored is not None and dim != stored:
                raise ConfigError(
                    f"Qdrant collection {self.collection!r} holds vectors of dimension {stored}, not {dim}"
                )
            self.dim = stored if stored is not None else dim
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

    # -- filters -----------------------------------------------------------------------------

    def _filter(self, where: Where | None, source: str | None = None) -> Any:
        m = self._b.m
        must: list[Any] = []
        items = where_items(where)
        if source is not None:
            items.append(("source", [source]))
        for key, values in items:
            field = key  # "metadata.lang" is Qdrant's own nested-key syntax
            if any(isinstance(v, float) and not float(v).is_integer() for v in values):
                raise ConfigError(
                    f"Qdrant matches exact values only; {key!r} has a fractional number"
                )
            vals = [int(v) if isinstance(v, float) else v for v in values]
            if (
                len(vals) > 1
                and not any(isinstance(v, bool) for v in vals)
                and len({type(v) for v in vals}) == 1
            ):
                must.append(m.FieldCondition(key=field, match=m.MatchAny(any=vals)))
            elif len(vals) == 1:
                must.append(m.FieldCondition(key=field, match=m.MatchValue(value=vals[0])))
            else:
                must.append(
                    m.Filter(
                        should=[
                            m.FieldCondition(key=field, match=m.MatchValue(value=v)) for v in vals
                        ]
                    )
                )
        return m.Filter(must=must) if must else None

    # -- protocol ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records of another kind than the collection's (and, for
        sparse and multivector collections, invalid ones) are set aside: the others are written,
        then ``RecordRejectedError`` lists the set-aside ids with reasons."""
        if not records:
            return
        batch, rejected = self._checked(last_wins(records))
        if batch and not self._exists:
            self._create(embedding_width(batch[0].embedding))
        if batch:
            ids = [uuid_for(r.id) for r in batch]
            payloads = [{ID_FIELD: r.id, **payload_of(r)} for r in batch]
            self._call("upsert records", self._b.upsert, ids, self._vectors(batch), payloads)
        if rejected:
            raise RecordRejectedError(
                f"{len(rejected)} of {len(records)} records were rejected by Qdrant collection "
                f"{self.collection!r}",
                rejected,
            )

    def _checked(self, batch: list[Record]) -> tuple[list[Record], dict[str, str]]:
        if self.kind == "dense":  # dense vectors are checked by Qdrant itself, as before
            problems: list[str | None] = [
                None
                if r.embedding.kind == "dense"
                else f"this collection holds dense embeddings, not {r.embedding.kind}"
                for r in batch
            ]
        else:
            problems = vector_problems(batch, self.dim, kind=self.kind, nonzero=True)
        return split_rejected(batch, problems)

    def _vectors(self, batch: list[Record]) -> Any:
        """The batch's vectors in the form the collection's kind takes."""
        if self.kind == "sparse":
            sparse = [r.embedding.sparse for r in batch]
            return {
                SPARSE_NAME: [
                    self._b.sparse(sv.indices.tolist(), sv.values.tolist())
                    for sv in sparse
                    if sv is not None
                ]
            }
        if self.kind == "multivector":
            return [np.asarray(r.embedding.multivector, dtype=np.float32).tolist() for r in batch]
        return [np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist() for r in batch]

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
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

    def _query_form(self, vector: Query) -> tuple[Any, str | None, float]:
        """The query as Qdrant takes it, the vector name it searches, and the lowest score
        there is (a range bound at or below it bounds nothing)."""
        if self.kind == "dense":
            return as_query(vector, self.dim).tolist(), None, -1.0
        q = query_embedding(vector, self.kind, self.dim)
        if q.sparse is not None:
            sparse = self._b.sparse(q.sparse.indices.tolist(), q.sparse.values.tolist())
            return sparse, SPARSE_NAME, -math.inf
        rows = np.asarray(q.multivector)
        return rows.tolist(), None, -float(rows.shape[0])

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
        form = self._query_form(vector)
        if not self._exists:
            return []
        return self._query(form, k, where, None)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        form = self._query_form(vector)
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
