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

An index holds dense or sparse embeddings (``open(..., kind="sparse")``; multivector is refused
before anything is sent: neither engine has MaxSim over a field of this layout). A sparse index
keeps the term weights in a ``sparse_vector`` field (Elasticsearch 8.15+) or ``rank_features``
(OpenSearch 1.1+) and is searched by the dot product, scored exactly (``_es_kinds``). The kind is
noted in the mapping's ``_meta`` and read back when an index is opened.

Side tables (the manifest) are hidden indices ``<index>__vs_<name>`` (``_es_side``); a store
opened with ``mode="r"`` reads them and refuses writes.

These adapters have not been run against a live server on the development machine (neither
engine runs there); their tests check the HTTP requests they build and the answers they parse.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .._dipr import threshold
from .._vectors import embedding_width
from ..errors import ConfigError, RecordRejectedError
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
    rest_client,
    server_address,
    side_name,
    where_items,
)
from ._es_kinds import (
    MAX_CANDIDATES,
    document,
    es_sparse_query,
    exact_top,
    index_body,
    os_sparse_query,
    query_terms,
    record_problems,
    sparse_body,
    sparse_properties,
    stored_kind,
)
from ._es_side import SideIndex, raise_bulk_errors
from ._kinds import check_kind, query_embedding, refuse_kind, settle_kind
from ._records import split_rejected
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from .base import Query, SideTable, StoreCapabilities, Where, dipr_cut

log = logging.getLogger("vectorstream.stores.elasticsearch")

PAGE = 5000


class _SearchEngineStore(ABC):
    """What Elasticsearch and OpenSearch share: index lifecycle, bulk writes, filters, counts."""

    vendor = "search engine"
    extra = "elasticsearch"
    default_port = 9200
    capabilities = StoreCapabilities(
        kinds=frozenset({"dense", "sparse"}), filters=True, range_search=True
    )
    dense_type: str  # the mapping types of the embedding field, per kind (each engine's own)
    sparse_type: str

    def __init__(
        self,
        uri: str,
        collection: str,
        client: RestClient,
        *,
        readonly: bool = False,
        kind: EmbeddingKind = "dense",
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
        self.kind: EmbeddingKind = kind  # read back from the index when it exists
        self.dim: int | None = None
        self._exists = False  # whether the index exists with an embedding field

    @classmethod
    def open(cls, uri: str, collection: str, *, dim: int | None = None, **options: Any) -> Any:
        opts = AdapterOptions(cls.vendor, options)
        raw_kind = opts.take("kind")
        kind = None if raw_kind is None else check_kind(raw_kind)
        if kind is not None and kind not in cls.capabilities.kinds:
            raise refuse_kind(cls.vendor, kind, sorted(cls.capabilities.kinds))
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
        store = cls(uri, collection, client, readonly=opts.mode == "r", kind=kind or "dense")
        try:
            store._open(dim, kind)
        except BaseException:
            store.close()
            raise
        return store

    # -- index lifecycle -----------------------------------------------------------------------

    def _open(self, dim: int | None, kind: EmbeddingKind | None) -> None:
        mapping = self._http.request(
            "GET", f"/{self.collection}/_mapping", action="read the index mapping", ok_missing=True
        )
        if mapping is not None:
            what = f"{self.vendor} index {self.collection!r}"
            mappings = next(iter(mapping.values()))["mappings"]
            props = mappings.get("properties", {})
            found = stored_kind(
                what,
                mappings,
                dense_type=self.dense_type,
                sparse_type=self.sparse_type,
                dense_dim=self._dim_of,
            )
            if found is not None:
                held, stored = found
                self.kind = settle_kind(what, held, kind)
                if dim is not None and stored is not None and stored != dim:
                    raise ConfigError(f"{what} holds vectors of dimension {stored}, not {dim}")
                self.dim = stored if stored is not None else dim
                self._exists = True
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
    def _dense_field(self, dim: int) -> dict[str, Any]:
        """The mapping of a dense index's vector field."""

    def _index_settings(self) -> dict[str, Any]:
        """The settings a new index of this kind needs (none by default)."""
        return {}

    def _create(self, dim: int) -> None:
        vector = (
            sparse_properties(self.sparse_type)
            if self.kind == "sparse"
            else {"embedding": self._dense_field(dim)}
        )
        body = index_body(self.kind, dim, vector, self._index_settings())
        self._http.request("PUT", f"/{self.collection}", json_body=body, action="create the index")
        self.dim = dim
        self._exists = True

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id. Records the index cannot hold (another kind; in a sparse
        index, an invalid vector or a negative weight) are set aside, as are those the engine
        refuses: the others are written, then ``RecordRejectedError`` lists the set-aside ids."""
        if not records:
            return
        batch = last_wins(records)
        good, rejected = split_rejected(
            batch, record_problems(self.kind, batch, self.dim, self.vendor)
        )
        if good:
            if not self._exists:
                self._create(embedding_width(good[0].embedding))
            try:
                self._write(good)
            except RecordRejectedError as exc:
                if not exc.rejected:  # the whole request was refused
                    raise
                rejected.update(exc.rejected)
        if rejected:
            raise RecordRejectedError(
                f"{self.vendor} rejected {len(rejected)} of {len(batch)} documents", rejected
            )

    def _write(self, batch: Sequence[Record]) -> None:
        lines: list[str] = []
        for r in batch:
            lines.append(json.dumps({"index": {"_index": self.collection, "_id": r.id}}))
            lines.append(json.dumps(document(r), ensure_ascii=False))
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
        if not self._exists:
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
        if not self._exists:
            return []
        body = self._knn(q, min(k, MAX_CANDIDATES), self._filter(where), min_cosine)
        body["_source"] = {"excludes": ["embedding"]}
        answer = self._http.request(
            "POST", f"/{self.collection}/_search", json_body=body, action="search"
        )
        return self._hits(answer)

    @abstractmethod
    def _sparse_query(
        self, terms: dict[str, float], filters: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The query scoring documents by their dot product with ``terms``, under the filters."""

    def _sparse(self, vector: Query, k: int, where: Where | None, cut: float) -> list[Hit]:
        """The ``k`` best documents of a sparse index by exact dot product (at least ``cut``,
        roughly: the caller cuts exactly), from the engine's candidates (``_es_kinds``)."""
        q = query_embedding(vector, "sparse", self.dim).sparse
        if q is None:  # query_embedding gives a query of the collection's kind
            raise ConfigError("this collection holds sparse embeddings")
        terms = query_terms(q, self.vendor)
        if not self._exists:
            return []
        query = self._sparse_query(terms, self._filter(where))

        def fetch(size: int) -> list[dict[str, Any]]:
            body = sparse_body(query, size, cut)
            answer = self._http.request(
                "POST", f"/{self.collection}/_search", json_body=body, action="search"
            )
            return list(answer.get("hits", {}).get("hits", []))

        ranked = exact_top(q, k, fetch, cut=cut)
        return [hit_of(str(h["_id"]), score, h.get("_source", {})) for score, h in ranked]

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` best documents: by cosine similarity (dense) or exact dot product (sparse;
        only documents sharing a term with the query)."""
        check_k(k)
        if self.kind == "sparse":
            return self._sparse(vector, k, where, -math.inf)
        return self._query(vector, k, where, None)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        if self.kind == "sparse":
            top = self._sparse(vector, 1, where, -math.inf)
            if not top:
                return []
            cut = threshold(top[0].score, beta)
            return dipr_cut(self._sparse(vector, limit, where, cut), beta)
        best = self._query(vector, 1, where, None)
        if not best:
            return []
        # The native bound, a hair wide (the engine scores in float32); the cut applies the rule.
        hits = self._query(vector, limit, where, threshold(best[0].score, beta) - 1e-6)
        return dipr_cut(hits, beta)

    def ids(self, source: str | None = None) -> set[str]:
        if not self._exists:
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
        if not self._exists:
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
        if self._exists:
            self._http.request("POST", f"/{self.collection}/_refresh", action="refresh the index")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ElasticsearchStore(_SearchEngineStore):
    """An Elasticsearch index with a ``dense_vector`` field (HNSW, cosine) or a ``sparse_vector``
    one (dot product, Elasticsearch 8.15+)."""

    vendor = "Elasticsearch"
    extra = "elasticsearch"
    dense_type = "dense_vector"
    sparse_type = "sparse_vector"

    def _dim_of(self, field: dict[str, Any]) -> int | None:
        return int(field["dims"]) if "dims" in field else None

    def _dense_field(self, dim: int) -> dict[str, Any]:
        return {"type": "dense_vector", "dims": dim, "index": True, "similarity": "cosine"}

    def _sparse_query(
        self, terms: dict[str, float], filters: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return es_sparse_query(terms, filters)

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
    """An OpenSearch index with a ``knn_vector`` field (HNSW, Lucene engine, cosinesimil) or a
    ``rank_features`` one (dot product by linear ``rank_feature`` queries, OpenSearch 1.1+)."""

    vendor = "OpenSearch"
    extra = "opensearch"
    dense_type = "knn_vector"
    sparse_type = "rank_features"

    def _dim_of(self, field: dict[str, Any]) -> int | None:
        return int(field["dimension"]) if "dimension" in field else None

    def _dense_field(self, dim: int) -> dict[str, Any]:
        return {
            "type": "knn_vector",
            "dimension": dim,
            # The Lucene engine filters during the graph search and supports radial search.
            "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
        }

    def _index_settings(self) -> dict[str, Any]:
        # k-NN fields need it; a sparse index has none.
        return {"index": {"knn": True}} if self.kind == "dense" else {}

    def _sparse_query(
        self, terms: dict[str, float], filters: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return os_sparse_query(terms, filters)

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
