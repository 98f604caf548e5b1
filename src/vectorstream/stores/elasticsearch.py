"""Elasticsearch and OpenSearch adapters, over their documented REST APIs (``httpx``).

URIs: ``elasticsearch://HOST:PORT`` (alias ``es://``) and ``opensearch://HOST:PORT``; options
``https=True``, ``api_key=…`` (Elasticsearch), ``basic_auth=(user, password)``, ``verify=…``,
``timeout=…``, ``transport=…`` (an ``httpx`` transport). The collection is the index name.

Each record is one document whose ``_id`` is our id, with the usual fields (``id``, ``text``,
``source``, ``page``, ``start_offset``, ``end_offset``, ``chunk_index``, ``section_index``,
``headings``, ``metadata``, ``model``) and the vector in ``embedding``: a ``dense_vector`` with
cosine similarity in Elasticsearch, a ``knn_vector`` (HNSW, Lucene engine, ``cosinesimil``) in
OpenSearch. Strings under ``metadata`` are mapped as keywords so filters match exact values.
Writes use the ``_bulk`` API; a document that fails is reported with its reason. An index made
before ``section_index`` existed gets the field in its mapping when a writer opens it (documents
without it read as section 0); a reader (``mode="r"``) changes nothing.

Both engines score cosine as ``(1 + cos) / 2``; hits carry the cosine itself. Range search is
native: Elasticsearch's kNN ``similarity`` bound, OpenSearch's radial ``min_score``.

Side tables (the manifest) are hidden indices ``<index>__vs_<name>`` (``_es_side``); a store
opened with ``mode="r"`` reads them and refuses writes.

These adapters have not been run against a live server on the development machine (neither
engine runs there); their tests check the HTTP requests they build and the answers they parse.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._dipr import threshold
from ..errors import ConfigError
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    SIDE_PREFIX,
    AdapterOptions,
    RestClient,
    as_query,
    check_k,
    check_range,
    hit_of,
    last_wins,
    payload_of,
    rest_client,
    server_address,
    side_name,
    where_items,
)
from ._es_side import SideIndex, raise_bulk_errors
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from .base import Query, SideTable, StoreCapabilities, Where, dipr_cut

log = logging.getLogger("vectorstream.stores.elasticsearch")

PAGE = 5000
MAX_CANDIDATES = 10_000  # both engines cap num_candidates / k at 10,000


class _SearchEngineStore(ABC):
    """What Elasticsearch and OpenSearch share: index lifecycle, bulk writes, filters, counts."""

    vendor = "search engine"
    extra = "elasticsearch"
    default_port = 9200
    capabilities = StoreCapabilities(filters=True, range_search=True)
    kind: EmbeddingKind = "dense"  # dense collections only (see docs/stores.md)

    def __init__(
        self, uri: str, collection: str, client: RestClient, *, readonly: bool = False
    ) -> None:
        if (
            collection != collection.lower()
            or not collection
            or collection.startswith(("_", "-", "+"))
        ):
            raise ConfigError(
                f"{self.vendor} index names are lowercase and cannot start with _, - or +: {collection!r}"
            )
        refuse_side_marker(collection, self.vendor)
        self.uri = uri
        self.readonly = readonly  # mode="r": side tables refuse writes
        self.collection = collection
        self._http = client
        self.dim: int | None = None

    @classmethod
    def open(cls, uri: str, collection: str, *, dim: int | None = None, **options: Any) -> Any:
        opts = AdapterOptions(cls.vendor, options)
        host, port = server_address(uri, cls.vendor, cls.default_port)
        scheme = "https" if opts.take("https", False) else "http"
        api_key = opts.take("api_key")
        client = rest_client(
            opts,
            f"{scheme}://{host}:{port}",
            extra=cls.extra,
            headers={"Authorization": f"ApiKey {api_key}"} if api_key else None,
            auth=opts.take("basic_auth"),
        )
        opts.finish()
        store = cls(uri, collection, client, readonly=opts.mode == "r")
        store._open(dim)
        return store

    # -- index lifecycle -----------------------------------------------------------------------

    def _open(self, dim: int | None) -> None:
        mapping = self._http.request(
            "GET", f"/{self.collection}/_mapping", action="read the index mapping", ok_missing=True
        )
        if mapping is not None:
            props = next(iter(mapping.values()))["mappings"].get("properties", {})
            stored = self._dim_of(props.get("embedding", {}))
            if dim is not None and stored is not None and stored != dim:
                raise ConfigError(
                    f"{self.vendor} index {self.collection!r} holds vectors of dimension {stored}, not {dim}"
                )
            self.dim = stored
            if "section_index" not in props and not self.readonly:
                # Typed now, as in a new index, rather than left to dynamic mapping (a long).
                self._http.request(
                    "PUT",
                    f"/{self.collection}/_mapping",
                    json_body={"properties": {"section_index": {"type": "integer"}}},
                    action="add section_index to the index mapping",
                )
        elif dim is not None:
            self._create(dim)

    @abstractmethod
    def _dim_of(self, field: dict[str, Any]) -> int | None:
        """The dimension recorded in the vector field's mapping (each engine names it differently)."""

    @abstractmethod
    def _index_body(self, dim: int) -> dict[str, Any]:
        """Settings and mappings of a new index."""

    def _create(self, dim: int) -> None:
        self._http.request(
            "PUT", f"/{self.collection}", json_body=self._index_body(dim), action="create the index"
        )
        self.dim = dim

    @staticmethod
    def _properties() -> dict[str, Any]:
        return {
            "id": {"type": "keyword"},
            "text": {"type": "text"},
            "source": {"type": "keyword"},
            "model": {"type": "keyword"},
            "page": {"type": "integer"},
            "start_offset": {"type": "integer"},
            "end_offset": {"type": "integer"},
            "chunk_index": {"type": "integer"},
            "section_index": {"type": "integer"},
            "headings": {"type": "keyword"},
            "metadata": {"type": "object", "dynamic": True},
        }

    @staticmethod
    def _dynamic_templates() -> list[dict[str, Any]]:
        # Metadata strings as keywords: a filter compares exact values, not analysed text.
        return [
            {
                "metadata_strings": {
                    "path_match": "metadata.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword"},
                }
            }
        ]

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        batch = last_wins(records)
        if self.dim is None:
            self._create(int(np.asarray(batch[0].embedding.as_dense()).shape[0]))
        lines: list[str] = []
        for r in batch:
            doc = {
                "id": r.id,
                **payload_of(r),
                "embedding": np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist(),
            }
            lines.append(json.dumps({"index": {"_index": self.collection, "_id": r.id}}))
            lines.append(json.dumps(doc, ensure_ascii=False))
        body = ("\n".join(lines) + "\n").encode("utf-8")
        answer = self._http.request(
            "POST",
            "/_bulk",
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
            action="upsert records",
        )
        if answer.get("errors"):
            self._raise_item_errors(answer.get("items", []))

    def _raise_item_errors(self, items: list[dict[str, Any]]) -> None:
        raise_bulk_errors(self.vendor, items)

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
        if self.dim is None:
            return 0
        if ids is not None:
            if not list(ids):
                return 0
            query: dict[str, Any] = {"ids": {"values": list(ids)}}
        else:
            query = {"term": {"source": source}}
        answer = self._http.request(
            "POST",
            f"/{self.collection}/_delete_by_query",
            params={"refresh": "true", "conflicts": "proceed"},
            json_body={"query": query},
            action="delete records",
        )
        return int(answer.get("deleted", 0))

    # -- reads ---------------------------------------------------------------------------------

    def _filter(self, where: Where | None, source: str | None = None) -> list[dict[str, Any]]:
        items = where_items(where)
        if source is not None:
            items.append(("source", [source]))
        return [{"terms": {key: values}} for key, values in items]

    def _hits(self, answer: dict[str, Any]) -> list[Hit]:
        hits = []
        for h in answer.get("hits", {}).get("hits", []):
            # Cosine _score is (1 + cos) / 2 in both engines; report the cosine.
            hits.append(hit_of(str(h["_id"]), 2.0 * float(h["_score"]) - 1.0, h.get("_source", {})))
        return hits

    @abstractmethod
    def _knn(
        self, q: list[float], k: int, filters: list[dict[str, Any]], min_cosine: float | None
    ) -> dict[str, Any]:
        """The search body of a kNN query, bounded below by ``min_cosine`` when given."""

    def _query(
        self, vector: Query, k: int, where: Where | None, min_cosine: float | None
    ) -> list[Hit]:
        q = as_query(vector, self.dim).tolist()
        if self.dim is None:
            return []
        body = self._knn(q, min(k, MAX_CANDIDATES), self._filter(where), min_cosine)
        body["_source"] = {"excludes": ["embedding"]}
        answer = self._http.request(
            "POST", f"/{self.collection}/_search", json_body=body, action="search"
        )
        return self._hits(answer)

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        check_k(k)
        return self._query(vector, k, where, None)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        best = self._query(vector, 1, where, None)
        if not best:
            return []
        # The native bound, a hair wide (the engine scores in float32); the cut applies the rule.
        hits = self._query(vector, limit, where, threshold(best[0].score, beta) - 1e-6)
        return dipr_cut(hits, beta)

    def ids(self, source: str | None = None) -> set[str]:
        if self.dim is None:
            return set()
        filters = self._filter(None, source)
        query: dict[str, Any] = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        out: set[str] = set()
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": query,
                "_source": False,
                "sort": [{"id": "asc"}],
            }
            if after is not None:
                body["search_after"] = after
            answer = self._http.request(
                "POST", f"/{self.collection}/_search", json_body=body, action="list ids"
            )
            page = answer.get("hits", {}).get("hits", [])
            out.update(str(h["_id"]) for h in page)
            if len(page) < PAGE:
                return out
            after = page[-1]["sort"]

    def count(self) -> int:
        if self.dim is None:
            return 0
        answer = self._http.request("GET", f"/{self.collection}/_count", action="count records")
        return int(answer.get("count", 0))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: its own hidden index ``<index>__vs_<name>``."""
        table = SideIndex(self._http, f"{self.collection}{SIDE_PREFIX}{side_name(name)}")
        if self.readonly:
            return ReadOnlySideTable(table, f"{self.vendor} index {self.collection!r}")
        return table

    def flush(self) -> None:
        """Make acknowledged writes visible to searches (a refresh); they are already durable."""
        if self.dim is not None:
            self._http.request("POST", f"/{self.collection}/_refresh", action="refresh the index")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ElasticsearchStore(_SearchEngineStore):
    """An Elasticsearch index with a ``dense_vector`` field (HNSW, cosine)."""

    vendor = "Elasticsearch"
    extra = "elasticsearch"

    def _dim_of(self, field: dict[str, Any]) -> int | None:
        return int(field["dims"]) if "dims" in field else None

    def _index_body(self, dim: int) -> dict[str, Any]:
        props = self._properties()
        props["embedding"] = {
            "type": "dense_vector",
            "dims": dim,
            "index": True,
            "similarity": "cosine",
        }
        return {"mappings": {"dynamic_templates": self._dynamic_templates(), "properties": props}}

    def _knn(
        self, q: list[float], k: int, filters: list[dict[str, Any]], min_cosine: float | None
    ) -> dict[str, Any]:
        knn: dict[str, Any] = {
            "field": "embedding",
            "query_vector": q,
            "k": k,
            "num_candidates": min(MAX_CANDIDATES, max(100, 2 * k)),
        }
        if filters:
            knn["filter"] = filters
        if min_cosine is not None:
            knn["similarity"] = min_cosine  # for cosine fields, the bound is on the cosine itself
        return {"knn": knn, "size": k}


class OpenSearchStore(_SearchEngineStore):
    """An OpenSearch index with a ``knn_vector`` field (HNSW, Lucene engine, cosinesimil)."""

    vendor = "OpenSearch"
    extra = "opensearch"

    def _dim_of(self, field: dict[str, Any]) -> int | None:
        return int(field["dimension"]) if "dimension" in field else None

    def _index_body(self, dim: int) -> dict[str, Any]:
        props = self._properties()
        props["embedding"] = {
            "type": "knn_vector",
            "dimension": dim,
            # The Lucene engine filters during the graph search and supports radial search.
            "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
        }
        return {
            "settings": {"index": {"knn": True}},
            "mappings": {"dynamic_templates": self._dynamic_templates(), "properties": props},
        }

    def _knn(
        self, q: list[float], k: int, filters: list[dict[str, Any]], min_cosine: float | None
    ) -> dict[str, Any]:
        clause: dict[str, Any] = {"vector": q}
        if min_cosine is None:
            clause["k"] = k
        else:
            clause["min_score"] = (1.0 + min_cosine) / 2.0  # radial search bounds the _score
        if filters:
            clause["filter"] = {"bool": {"filter": filters}}
        return {"size": k, "query": {"knn": {"embedding": clause}}}


__all__ = ["ElasticsearchStore", "OpenSearchStore", "SideIndex"]
