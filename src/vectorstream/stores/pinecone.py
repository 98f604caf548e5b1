"""Pinecone adapter over its data-plane REST API (``httpx``): ``pinecone://INDEX_HOST``.

``INDEX_HOST`` is the index's host as the Pinecone console shows it (``name-xxxx.svc.….pinecone.io``);
the index must exist and use the ``cosine`` metric. The collection is a *namespace* in it, which
Pinecone creates on first write. Options: ``api_key=…`` (or the ``PINECONE_API_KEY`` environment
variable), ``verify=…`` (TLS), ``timeout=…``, ``transport=…`` (an ``httpx`` transport),
``https=False`` for Pinecone Local.

Pinecone metadata is flat, so a record is stored as: id = our id, ``values`` = the vector, and
metadata ``text``, ``source``, ``model``, ``page`` (absent when none), ``start_offset``,
``end_offset``, ``chunk_index``, ``section_index`` (absent in records written before it existed:
read as 0), ``headings`` (JSON text), ``metadata`` (JSON text, read back exactly) and
``metadata.<key>`` for each scalar metadata value, which filters use. Scores are
cosine similarities. Pinecone has no range query: ``range_search`` widens a top-k query.
Side tables (the manifest) are the reserved namespaces ``__vs_<collection>_<name>`` of the index.

Pinecone is eventually consistent: a write is durable when acknowledged but can take a moment to
show in queries and counts. Not run against a live Pinecone from the development machine; the
tests check the HTTP requests it builds and the answers it parses.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    SIDE_PREFIX,
    AdapterOptions,
    RestClient,
    adaptive_range,
    as_query,
    check_k,
    check_range,
    doc_json,
    flat_metadata,
    hit_of,
    last_wins,
    rest_client,
    side_key_id,
    side_name,
    where_items,
)
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from .base import Doc, Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.pinecone")

API_VERSION = "2025-04"
UPSERT_BATCH = 100  # Pinecone limits an upsert request to 2 MB; 100 vectors of 1,536 floats fit
MAX_TOP_K = 10_000
METADATA_LIMIT = 40_960  # bytes of metadata per vector


class PineconeSideTable:
    """A side table as a reserved namespace of the index: id = the key, metadata = key + doc.

    Pinecone has no vector-less rows and refuses all-zero vectors, so every row carries the same
    unit vector. The document is JSON text in the metadata, which Pinecone bounds at 40 KB a row.
    Pinecone acknowledges a write once it is durable; like records, rows can take a moment to
    show in ``scan`` (a listing), while ``get_many`` fetches by id.
    """

    def __init__(self, http: RestClient, namespace: str, dim: int) -> None:
        self._http = http
        self.namespace = namespace
        self._unit = [1.0] + [0.0] * (dim - 1)

    def _fetch(self, ids: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        start = 0
        while start < len(ids):
            # Ids travel in the query string: bound their number and their total length.
            end, size = start, 0
            while end < len(ids) and end - start < 100 and size + len(ids[end]) <= 4000:
                size += len(ids[end])
                end += 1
            end = max(end, start + 1)
            answer = self._http.request(
                "GET",
                "/vectors/fetch",
                params=[("ids", x) for x in ids[start:end]] + [("namespace", self.namespace)],
                action="read a side table",
            )
            found.update(answer.get("vectors") or {})
            start = end
        return found

    @staticmethod
    def _row(vector: dict[str, Any]) -> tuple[str, Doc] | None:
        meta = vector.get("metadata") or {}
        if "key" not in meta:
            return None
        return str(meta["key"]), json.loads(meta.get("doc") or "{}")

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        ids = {side_key_id(k, ascii_only=True): k for k in dict.fromkeys(keys)}
        out: dict[str, Doc] = {}
        for vid, vector in self._fetch(list(ids)).items():
            row = self._row(vector)
            if row is not None and ids.get(vid) == row[0]:
                out[row[0]] = row[1]
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        vectors = []
        for key, doc in docs.items():
            meta = {"key": key, "doc": doc_json(key, doc)}
            size = len(json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            if size > METADATA_LIMIT:
                raise StoreError(
                    f"side table row {key!r} is {size} bytes; Pinecone keeps at most "
                    f"{METADATA_LIMIT} bytes of metadata a row"
                )
            vectors.append(
                {"id": side_key_id(key, ascii_only=True), "values": self._unit, "metadata": meta}
            )
        for i in range(0, len(vectors), UPSERT_BATCH):
            self._http.request(
                "POST",
                "/vectors/upsert",
                json_body={"vectors": vectors[i : i + UPSERT_BATCH], "namespace": self.namespace},
                action="write side table rows",
            )

    def delete_many(self, keys: Sequence[str]) -> None:
        ids = [side_key_id(k, ascii_only=True) for k in dict.fromkeys(keys)]
        for i in range(0, len(ids), 1000):
            self._http.request(
                "POST",
                "/vectors/delete",
                json_body={"ids": ids[i : i + 1000], "namespace": self.namespace},
                action="delete side table rows",
            )

    def scan(self) -> Iterator[tuple[str, Doc]]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"namespace": self.namespace, "limit": 100}
            if token:
                params["paginationToken"] = token
            answer = self._http.request(
                "GET", "/vectors/list", params=params, action="scan a side table"
            )
            ids = [str(v["id"]) for v in answer.get("vectors") or []]
            for vector in self._fetch(ids).values():
                row = self._row(vector)
                if row is not None:
                    yield row
            token = (answer.get("pagination") or {}).get("next")
            if not token:
                return


class PineconeStore:
    """A namespace of a Pinecone index as a ``VectorStore``."""

    capabilities = StoreCapabilities(filters=True, range_search=True)
    kind: EmbeddingKind = "dense"  # dense collections only (see docs/stores.md)

    def __init__(
        self, uri: str, collection: str, client: RestClient, *, readonly: bool = False
    ) -> None:
        self.uri = uri
        self.readonly = readonly  # mode="r": side tables refuse writes
        self.collection = collection
        self._http = client
        self.dim: int | None = None
        # The writer checks payload sizes against this before sending.
        self.max_record_bytes = METADATA_LIMIT

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> PineconeStore:
        opts = AdapterOptions("Pinecone", options)
        refuse_side_marker(collection, "Pinecone")
        _, _, rest = uri.partition(":")
        host = rest.removeprefix("//").strip("/")
        if not host:
            raise ConfigError("Pinecone URIs look like pinecone://INDEX_HOST (the index's host)")
        api_key = opts.take("api_key") or os.environ.get("PINECONE_API_KEY")
        if not api_key:
            raise ConfigError("Pinecone needs an API key: pass api_key=… or set PINECONE_API_KEY")
        scheme = "https" if opts.take("https", True) else "http"
        client = rest_client(
            opts,
            f"{scheme}://{host}",
            extra="pinecone",
            headers={"Api-Key": api_key, "X-Pinecone-API-Version": API_VERSION},
        )
        opts.finish()
        store = cls(uri, collection, client, readonly=opts.mode == "r")
        store._open(dim)
        return store

    def _open(self, dim: int | None) -> None:
        stats = self._stats()
        stored = int(stats.get("dimension") or 0) or None
        metric = stats.get("metric", "cosine")
        if metric != "cosine":
            raise ConfigError(
                f"Pinecone index uses the {metric!r} metric; vectorstream needs cosine"
            )
        if stored is not None and dim is not None and stored != dim:
            raise ConfigError(f"Pinecone index holds vectors of dimension {stored}, not {dim}")
        self.dim = stored or dim

    def _stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._http.request(
            "POST", "/describe_index_stats", json_body={}, action="describe the index"
        )
        return answer

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        batch = last_wins(records)
        for i in range(0, len(batch), UPSERT_BATCH):
            vectors = [
                {
                    "id": r.id,
                    "values": np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist(),
                    "metadata": {"text": r.text, **flat_metadata(r)},
                }
                for r in batch[i : i + UPSERT_BATCH]
            ]
            answer = self._http.request(
                "POST",
                "/vectors/upsert",
                json_body={"vectors": vectors, "namespace": self.collection},
                action="upsert records",
            )
            if int(answer.get("upsertedCount", len(vectors))) != len(vectors):
                raise StoreError(
                    f"Pinecone acknowledged {answer.get('upsertedCount')} of {len(vectors)} vectors"
                )

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
        if ids is not None:
            wanted = list(ids)
            if not wanted:
                return 0
            found = self._fetch_existing(wanted)
            for i in range(0, len(found), 1000):
                self._http.request(
                    "POST",
                    "/vectors/delete",
                    json_body={"ids": found[i : i + 1000], "namespace": self.collection},
                    action="delete records",
                )
            return len(found)
        matched = sorted(self.ids(source))
        if matched:
            self._http.request(
                "POST",
                "/vectors/delete",
                json_body={"filter": {"source": {"$eq": source}}, "namespace": self.collection},
                action="delete records",
            )
        return len(matched)

    def _fetch_existing(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        for i in range(0, len(ids), 100):
            answer = self._http.request(
                "GET",
                "/vectors/fetch",
                params=[("ids", x) for x in ids[i : i + 100]] + [("namespace", self.collection)],
                action="fetch records",
            )
            found.extend((answer.get("vectors") or {}).keys())
        return found

    # -- reads ---------------------------------------------------------------------------------

    @staticmethod
    def _filter(where: Where | None) -> dict[str, Any] | None:
        clauses = [{key: {"$in": values}} for key, values in where_items(where)]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def _query(
        self, vector: list[float], k: int, flt: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "vector": vector,
            "topK": min(k, MAX_TOP_K),
            "namespace": self.collection,
            "includeMetadata": True,
            "includeValues": False,
        }
        if flt is not None:
            body["filter"] = flt
        answer = self._http.request("POST", "/query", json_body=body, action="search")
        matches: list[dict[str, Any]] = answer.get("matches") or []
        return matches

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        check_k(k)
        q = as_query(vector, self.dim).tolist()
        if self.dim is None:
            return []  # an index that has never held a vector
        return [
            hit_of(str(m["id"]), float(m["score"]), m.get("metadata") or {})
            for m in self._query(q, k, self._filter(where))
        ]

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        return adaptive_range(lambda k: self.search(vector, k, where), beta, min(limit, MAX_TOP_K))

    def ids(self, source: str | None = None) -> set[str]:
        if source is None:
            return self._list_all()
        if self.dim is None:
            return set()
        # Pinecone lists ids by prefix only; a filtered query with any unit vector returns
        # every match when they number at most top_k.
        probe = [1.0] + [0.0] * (self.dim - 1)
        matches = self._query(probe, MAX_TOP_K, {"source": {"$eq": source}})
        if len(matches) >= MAX_TOP_K:
            raise StoreError(
                f"source {source!r} has {MAX_TOP_K} or more records; Pinecone cannot list them by filter"
            )
        return {str(m["id"]) for m in matches}

    def _list_all(self) -> set[str]:
        out: set[str] = set()
        token: str | None = None
        while True:
            params: dict[str, Any] = {"namespace": self.collection, "limit": 100}
            if token:
                params["paginationToken"] = token
            answer = self._http.request("GET", "/vectors/list", params=params, action="list ids")
            out.update(str(v["id"]) for v in answer.get("vectors") or [])
            token = (answer.get("pagination") or {}).get("next")
            if not token:
                return out

    def count(self) -> int:
        namespaces = self._stats().get("namespaces") or {}
        return int((namespaces.get(self.collection) or {}).get("vectorCount", 0))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: the namespace ``__vs_<collection>_<name>`` of this index."""
        if self.dim is None:
            raise StoreError("the Pinecone index reports no dimension; cannot hold a side table")
        namespace = f"{SIDE_PREFIX}{self.collection}_{side_name(name)}"
        table = PineconeSideTable(self._http, namespace, self.dim)
        if self.readonly:
            return ReadOnlySideTable(table, f"Pinecone namespace {self.collection!r}")
        return table

    def flush(self) -> None:
        """Acknowledged writes are durable; Pinecone makes them visible to queries shortly after."""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PineconeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PineconeSideTable", "PineconeStore"]
