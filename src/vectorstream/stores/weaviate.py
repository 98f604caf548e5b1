"""Weaviate adapter over its REST and GraphQL APIs (``httpx``): ``weaviate://HOST:PORT``.

Options: ``https=True``, ``api_key=…`` (a bearer token), ``verify=…`` (TLS), ``timeout=…``,
``transport=…`` (an ``httpx`` transport). The collection becomes a Weaviate class (first letter upper-cased, as
Weaviate requires) with ``vectorizer: none`` and the cosine distance; our vectors are supplied.

Object ids must be UUIDs, so each record is stored under the UUID5 of its id and the id itself
is kept in the ``vs_id`` property. Other properties: ``text``, ``source``, ``model`` (exact-match
``field`` tokenization), ``page``, ``start_offset``, ``end_offset``, ``chunk_index``,
``section_index``, ``headings`` and ``metadata_json`` (the record's metadata, read back exactly).
Weaviate cannot filter inside object properties, so each scalar metadata value is also a property
``meta_<key>``; the adapter adds those properties to the class before the first write that needs
them. A class made before ``section_index`` existed gets that property the same way, before its
first write; until then searches leave it out and its objects read as section 0. Scores are
``1 - cosine distance``; range search is native (``nearVector`` with a ``distance`` bound).
Side tables (the manifest) are vector-less classes ``<Class>__vs_<name>`` (``_weaviate_side``).

Not run against a live Weaviate on the development machine; the tests check the HTTP requests
and GraphQL queries it builds and the answers it parses.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._dipr import threshold
from ..errors import ConfigError, RecordRejectedError
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    ID_FIELD,
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
    uuid_for,
    where_items,
)
from ._side_collections import ReadOnlySideTable, refuse_side_marker
from ._weaviate_side import WeaviateSideTable, _Enum, gql, graphql
from .base import Query, SideTable, StoreCapabilities, Where, dipr_cut

log = logging.getLogger("vectorstream.stores.weaviate")

PAGE = 1000
FIXED = (
    "vs_id",
    "text",
    "source",
    "model",
    "page",
    "start_offset",
    "end_offset",
    "chunk_index",
    "section_index",
    "headings",
    "metadata_json",
)
SECTION_INDEX = "section_index"  # added after the first release: older classes lack it
NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")


def meta_property(key: str) -> str:
    """The property holding metadata key ``key`` (Weaviate names: letters, digits, ``_``)."""
    return "meta_" + re.sub(r"[^0-9A-Za-z_]", "_", key)


def _data_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    return "text"


def _value_key(value: Any) -> str:
    return {"boolean": "valueBoolean", "int": "valueInt", "number": "valueNumber"}.get(
        _data_type(value), "valueText"
    )


class WeaviateStore:
    """A Weaviate class as a ``VectorStore``."""

    capabilities = StoreCapabilities(filters=True, range_search=True)
    kind: EmbeddingKind = "dense"  # dense collections only (see docs/stores.md)

    def __init__(
        self, uri: str, collection: str, client: RestClient, *, readonly: bool = False
    ) -> None:
        self.uri = uri
        self.readonly = readonly  # mode="r": side tables refuse writes
        self.collection = collection
        refuse_side_marker(collection, "Weaviate")
        self.class_name = collection[:1].upper() + collection[1:]
        if not NAME.match(self.class_name):
            raise ConfigError(f"Weaviate class names use letters, digits and _: {collection!r}")
        self._http = client
        self.dim: int | None = None
        self._exists = False
        self._props: set[str] = set()

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> WeaviateStore:
        opts = AdapterOptions("Weaviate", options)
        host, port = server_address(uri, "Weaviate", 8080)
        scheme = "https" if opts.take("https", False) else "http"
        api_key = opts.take("api_key")
        client = rest_client(
            opts,
            f"{scheme}://{host}:{port}",
            extra="weaviate",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )
        opts.finish()
        store = cls(uri, collection, client, readonly=opts.mode == "r")
        store._open(dim)
        return store

    # -- schema --------------------------------------------------------------------------------

    def _open(self, dim: int | None) -> None:
        schema = self._http.request(
            "GET", f"/v1/schema/{self.class_name}", action="read the class", ok_missing=True
        )
        if schema is None:
            if dim is not None:
                self._create(dim)
            return
        self._exists = True
        self._props = {p["name"] for p in schema.get("properties", [])}
        distance = (schema.get("vectorIndexConfig") or {}).get("distance", "cosine")
        if distance != "cosine":
            raise ConfigError(
                f"Weaviate class {self.class_name!r} uses {distance!r} distance; vectorstream needs cosine"
            )
        sample = self._http.request(
            "GET",
            "/v1/objects",
            params={"class": self.class_name, "limit": 1, "include": "vector"},
            action="read a sample object",
        )
        objects = sample.get("objects") or []
        stored = len(objects[0]["vector"]) if objects and objects[0].get("vector") else None
        if stored is not None and dim is not None and stored != dim:
            raise ConfigError(
                f"Weaviate class {self.class_name!r} holds vectors of dimension {stored}, not {dim}"
            )
        self.dim = stored if stored is not None else dim

    def _create(self, dim: int) -> None:
        def text(name: str, tokenization: str = "field") -> dict[str, Any]:
            return {"name": name, "dataType": ["text"], "tokenization": tokenization}

        props = [
            text("vs_id"),
            text("text", "word"),
            text("source"),
            text("model"),
            *(
                {"name": n, "dataType": ["int"]}
                for n in ("page", "start_offset", "end_offset", "chunk_index", SECTION_INDEX)
            ),
            {"name": "headings", "dataType": ["text[]"], "tokenization": "field"},
            {
                "name": "metadata_json",
                "dataType": ["text"],
                "indexFilterable": False,
                "indexSearchable": False,
            },
        ]
        body = {
            "class": self.class_name,
            "vectorizer": "none",
            "vectorIndexType": "hnsw",
            "vectorIndexConfig": {"distance": "cosine"},
            "properties": props,
        }
        self._http.request("POST", "/v1/schema", json_body=body, action="create the class")
        self._exists = True
        self._props = {p["name"] for p in props}
        self.dim = dim

    def _ensure_meta_properties(self, batch: list[Record]) -> None:
        wanted: dict[str, str] = {SECTION_INDEX: "int"}  # a class made before it lacks it
        for r in batch:
            for key, value in r.metadata.items():
                if isinstance(value, str | int | float | bool):
                    wanted.setdefault(meta_property(key), _data_type(value))
        for name, dtype in sorted(wanted.items()):
            if name in self._props:
                continue
            body: dict[str, Any] = {"name": name, "dataType": [dtype]}
            if dtype == "text":
                body["tokenization"] = "field"  # filters compare whole values
            self._http.request(
                "POST",
                f"/v1/schema/{self.class_name}/properties",
                json_body=body,
                action=f"add property {name}",
            )
            self._props.add(name)

    # -- writes --------------------------------------------------------------------------------

    def _object(self, r: Record) -> dict[str, Any]:
        props: dict[str, Any] = {
            "vs_id": r.id,
            "text": r.text,
            "source": r.source,
            "model": r.model,
            "start_offset": r.start,
            "end_offset": r.end,
            "chunk_index": r.chunk_index,
            SECTION_INDEX: r.section_index,
            "headings": list(r.headings),
            "metadata_json": json.dumps(dict(r.metadata), ensure_ascii=False, default=str),
        }
        if r.page is not None:
            props["page"] = r.page
        for key, value in r.metadata.items():
            if isinstance(value, str | int | float | bool):
                props[meta_property(key)] = value
        return {
            "class": self.class_name,
            "id": uuid_for(r.id),
            "properties": props,
            "vector": np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist(),
        }

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        batch = last_wins(records)
        if not self._exists:
            self._create(int(np.asarray(batch[0].embedding.as_dense()).shape[0]))
        self._ensure_meta_properties(batch)
        answer = self._http.request(
            "POST",
            "/v1/batch/objects",
            json_body={"objects": [self._object(r) for r in batch]},
            action="upsert records",
        )
        rejected: dict[str, str] = {}
        for obj in answer if isinstance(answer, list) else []:
            errors = ((obj.get("result") or {}).get("errors") or {}).get("error") or []
            if errors:
                rid = (obj.get("properties") or {}).get(ID_FIELD, obj.get("id"))
                rejected[str(rid)] = "; ".join(str(e.get("message", e)) for e in errors)
        if rejected:
            raise RecordRejectedError(f"Weaviate rejected {len(rejected)} objects", rejected)

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
        if not self._exists:
            return 0
        if ids is not None:
            if not list(ids):
                return 0
            where: dict[str, Any] = {
                "path": ["id"],
                "operator": "ContainsAny",
                "valueTextArray": [uuid_for(i) for i in ids],
            }
        else:
            where = {"path": ["source"], "operator": "Equal", "valueText": source}
        answer = self._http.request(
            "DELETE",
            "/v1/batch/objects",
            json_body={"match": {"class": self.class_name, "where": where}, "output": "minimal"},
            action="delete records",
        )
        return int((answer.get("results") or {}).get("successful", 0))

    # -- reads ---------------------------------------------------------------------------------

    def _where(self, where: Where | None) -> dict[str, Any] | None:
        operands = []
        for key, values in where_items(where):
            path = meta_property(key[9:]) if key.startswith("metadata.") else key
            ors = [{"path": [path], "operator": _Enum("Equal"), _value_key(v): v} for v in values]
            operands.append(ors[0] if len(ors) == 1 else {"operator": _Enum("Or"), "operands": ors})
        if not operands:
            return None
        return (
            operands[0] if len(operands) == 1 else {"operator": _Enum("And"), "operands": operands}
        )

    def _graphql(self, query: str, action: str) -> dict[str, Any]:
        return graphql(self._http, query, action)

    def _near(
        self, vector: Query, limit: int, where: Where | None, max_distance: float | None
    ) -> list[Hit]:
        q = as_query(vector, self.dim)
        if not self._exists:
            return []
        near: dict[str, Any] = {"vector": [float(x) for x in q]}
        if max_distance is not None:
            near["distance"] = max_distance
        args: dict[str, Any] = {"nearVector": near, "limit": limit}
        flt = self._where(where)
        if flt is not None:
            args["where"] = flt
        arg_text = gql(args)[1:-1]
        # Weaviate refuses a query naming a property the class lacks (an older class).
        fields = " ".join(f for f in FIXED if f != SECTION_INDEX or f in self._props)
        query = f"{{ Get {{ {self.class_name}({arg_text}) {{ {fields} _additional {{ id distance }} }} }} }}"
        rows = (self._graphql(query, "search").get("Get") or {}).get(self.class_name) or []
        hits = []
        for row in rows:
            payload = {**row, "metadata": row.get("metadata_json") or "{}"}
            hits.append(
                hit_of(str(row[ID_FIELD]), 1.0 - float(row["_additional"]["distance"]), payload)
            )
        return hits

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        check_k(k)
        return self._near(vector, k, where, None)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        beta = check_range(beta, limit)
        best = self._near(vector, 1, where, None)
        if not best:
            return []
        # Cosine distance = 1 - similarity: "within beta of the best" is a distance bound (a hair
        # wide, as Weaviate computes in float32); the cut then applies the rule exactly.
        bound = 1.0 - threshold(best[0].score, beta) + 1e-6
        return dipr_cut(self._near(vector, limit, where, bound), beta)

    def ids(self, source: str | None = None) -> set[str]:
        if not self._exists:
            return set()
        # The cursor API (``after``) pages through a whole class without the offset limit, but
        # takes no filter: read vs_id and source and filter here.
        out: set[str] = set()
        after: str | None = None
        while True:
            args = f"limit: {PAGE}" + (f", after: {json.dumps(after)}" if after else "")
            query = (
                f"{{ Get {{ {self.class_name}({args}) {{ vs_id source _additional {{ id }} }} }} }}"
            )
            rows = (self._graphql(query, "list ids").get("Get") or {}).get(self.class_name) or []
            out.update(
                str(r[ID_FIELD]) for r in rows if source is None or r.get("source") == source
            )
            if len(rows) < PAGE:
                return out
            after = rows[-1]["_additional"]["id"]

    def count(self) -> int:
        if not self._exists:
            return 0
        data = self._graphql(
            f"{{ Aggregate {{ {self.class_name} {{ meta {{ count }} }} }} }}", "count records"
        )
        rows = (data.get("Aggregate") or {}).get(self.class_name) or [{}]
        return int((rows[0].get("meta") or {}).get("count", 0))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: a vector-less class ``<Class>__vs_<name>``."""
        table = WeaviateSideTable(self._http, f"{self.class_name}{SIDE_PREFIX}{side_name(name)}")
        if self.readonly:
            return ReadOnlySideTable(table, f"Weaviate class {self.class_name!r}")
        return table

    def flush(self) -> None:
        """Weaviate acknowledges a batch once it is written to its write-ahead log."""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WeaviateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["WeaviateSideTable", "WeaviateStore", "gql", "meta_property"]
