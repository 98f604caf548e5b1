"""Weaviate adapter at the HTTP seam (no Weaviate runs on this machine).

Answers come from an ``httpx.MockTransport``; the tests check the REST calls and the GraphQL
queries the adapter builds, and what it makes of Weaviate's answers.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
import pytest

from _servers_support import FakeServer, check_contract, check_side_table, make_records
from _vendor_fakes import FakeWeaviate
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError
from vectorstream.stores import open_store
from vectorstream.stores._common import uuid_for
from vectorstream.stores.retry import write_with_retry
from vectorstream.stores.weaviate import gql

PROPERTIES = (
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
SCHEMA = {
    "class": "Docs",
    "vectorIndexConfig": {"distance": "cosine"},
    "properties": [{"name": n} for n in PROPERTIES],
}


def open_w(server: FakeServer, dim: int | None = 4, **kw: Any):
    return open_store(
        "weaviate://wv.test:8080", "docs", dim=dim, transport=httpx.MockTransport(server), **kw
    )


def existing(dim: int = 4, routes: dict[tuple[str, str], Any] | None = None) -> FakeServer:
    base = {
        ("GET", "/v1/schema/Docs"): SCHEMA,
        ("GET", "/v1/objects"): {"objects": [{"id": "x", "vector": [0.0] * dim}]},
    }
    base.update(routes or {})
    return FakeServer(base)


def test_gql_literals() -> None:
    from vectorstream.stores.weaviate import _Enum

    assert (
        gql({"path": ["a"], "operator": _Enum("Equal"), "valueText": 'say "hi"'})
        == '{path: ["a"] operator: Equal valueText: "say \\"hi\\""}'
    )
    assert gql([1, 2.5, True]) == "[1, 2.5, true]"


def test_creates_a_cosine_class_without_vectorizer() -> None:
    server = FakeServer({("POST", "/v1/schema"): {}})
    store = open_w(server)
    (body,) = server.sent("POST", "/v1/schema")
    assert body["class"] == "Docs" and body["vectorizer"] == "none"
    assert body["vectorIndexConfig"] == {"distance": "cosine"}
    props = {p["name"]: p for p in body["properties"]}
    assert props["source"]["tokenization"] == "field" and props["headings"]["dataType"] == [
        "text[]"
    ]
    assert props["page"]["dataType"] == ["int"]
    assert store.class_name == "Docs" and store.dim == 4


def test_existing_class_dimension_and_distance_are_checked() -> None:
    assert open_w(existing(16), dim=None).dim == 16
    with pytest.raises(ConfigError, match="dimension 16, not 4"):
        open_w(existing(16))
    dot = FakeServer(
        {("GET", "/v1/schema/Docs"): {**SCHEMA, "vectorIndexConfig": {"distance": "dot"}}}
    )
    with pytest.raises(ConfigError, match="cosine"):
        open_w(dot)
    with pytest.raises(ConfigError, match="letters"):
        open_store("weaviate://wv.test", "bad-name", dim=4, transport=httpx.MockTransport(dot))


def test_batch_upsert_uses_uuid5_keeps_our_id_and_adds_metadata_properties() -> None:
    server = existing(
        routes={("POST", "/v1/schema/Docs/properties"): {}, ("POST", "/v1/batch/objects"): []}
    )
    store = open_w(server)
    records = make_records(3, dim=4)
    store.upsert(records)
    added = server.sent("POST", "/v1/schema/Docs/properties")
    assert {p["name"]: p["dataType"] for p in added} == {"meta_lang": ["text"], "meta_n": ["int"]}
    assert next(p for p in added if p["name"] == "meta_lang")["tokenization"] == "field"
    (body,) = server.sent("POST", "/v1/batch/objects")
    obj = body["objects"][1]
    assert obj["class"] == "Docs" and obj["id"] == uuid_for(records[1].id)
    assert obj["properties"]["vs_id"] == records[1].id and obj["properties"]["meta_lang"] == "en"
    assert obj["properties"]["metadata_json"] == '{"lang": "en", "n": 1}'
    assert obj["vector"] == pytest.approx(records[1].embedding.as_dense().tolist())
    store.upsert(records)  # properties are added once
    assert len(server.sent("POST", "/v1/schema/Docs/properties")) == 2


def test_per_object_errors_are_rejections_and_the_writer_keeps_the_rest() -> None:
    records = make_records(4, dim=4)
    bad = records[3].id

    def batch(body: dict[str, Any], _r: httpx.Request) -> list[dict[str, Any]]:
        out = []
        for o in body["objects"]:
            res: dict[str, Any] = {}
            if o["properties"]["vs_id"] == bad:
                res = {"errors": {"error": [{"message": "invalid text property 'source'"}]}}
            out.append({**o, "result": res})
        return out

    server = existing(
        routes={("POST", "/v1/schema/Docs/properties"): {}, ("POST", "/v1/batch/objects"): batch}
    )
    store = open_w(server)
    with pytest.raises(RecordRejectedError) as info:
        store.upsert(records)
    assert info.value.rejected == {bad: "invalid text property 'source'"}
    seen: list[str] = []
    assert (
        write_with_retry(store, records, on_rejected=lambda r, why: seen.append(r.id)).written == 3
    )
    assert seen == [bad]


def _rows(*pairs: tuple[str, float]) -> dict[str, Any]:
    rows = [
        {
            "vs_id": rid,
            "text": "t",
            "source": "s.txt",
            "model": "m",
            "page": None,
            "start_offset": 1,
            "end_offset": 5,
            "chunk_index": 3,
            "headings": ["H"],
            "metadata_json": '{"lang": "en"}',
            "_additional": {"id": uuid_for(rid), "distance": d},
        }
        for rid, d in pairs
    ]
    return {"data": {"Get": {"Docs": rows}}}


def test_search_sends_near_vector_graphql_with_filters() -> None:
    server = existing(routes={("POST", "/v1/graphql"): _rows(("a", 0.1), ("b", 0.4))})
    store = open_w(server)
    hits = store.search(
        np.array([1, 0, 0, 0], dtype=np.float32),
        k=2,
        where={"source": ["x", "y"], "metadata.n": 3, "page": 1},
    )
    (body,) = server.sent("POST", "/v1/graphql")
    q = body["query"]
    assert q.startswith(
        "{ Get { Docs(nearVector: {vector: [1.0, 0.0, 0.0, 0.0]} limit: 2 where: {operator: And operands: ["
    )
    assert (
        '{operator: Or operands: [{path: ["source"] operator: Equal valueText: "x"}, {path: ["source"] operator: Equal valueText: "y"}]}'
        in q
    )
    assert (
        '{path: ["meta_n"] operator: Equal valueInt: 3}' in q
        and '{path: ["page"] operator: Equal valueInt: 1}' in q
    )
    assert "_additional { id distance }" in q
    assert [h.id for h in hits] == ["a", "b"] and [h.score for h in hits] == pytest.approx(
        [0.9, 0.6]
    )
    assert hits[0].metadata == {"lang": "en"} and hits[0].headings == ("H",) and hits[0].start == 1


def test_range_search_bounds_the_distance() -> None:
    answers = iter([_rows(("a", 0.2)), _rows(("a", 0.2), ("b", 0.3))])
    server = existing(routes={("POST", "/v1/graphql"): lambda b, r: next(answers)})
    store = open_w(server)
    hits = store.range_search(np.ones(4, dtype=np.float32), 0.15, limit=20)
    first, second = server.sent("POST", "/v1/graphql")
    assert "limit: 1" in first["query"] and "distance:" not in first["query"]
    bound = float(re.search(r"distance: ([0-9.]+)", second["query"]).group(1))
    assert bound == pytest.approx(1 - (0.8 - 0.15), abs=2e-6) and "limit: 20" in second["query"]
    assert [h.id for h in hits] == ["a", "b"]


def test_graphql_errors_are_store_errors() -> None:
    server = existing(routes={("POST", "/v1/graphql"): {"errors": [{"message": "no such class"}]}})
    with pytest.raises(StoreError, match="no such class"):
        open_w(server).search(np.ones(4, dtype=np.float32))


def test_deletes_count_and_ids() -> None:
    pages = iter(
        [
            {
                "data": {
                    "Get": {
                        "Docs": [
                            {
                                "vs_id": f"id{i}",
                                "source": "a" if i % 2 else "b",
                                "_additional": {"id": f"u{i}"},
                            }
                            for i in range(1000)
                        ]
                    }
                }
            },
            {
                "data": {
                    "Get": {"Docs": [{"vs_id": "z", "source": "a", "_additional": {"id": "uz"}}]}
                }
            },
        ]
    )

    def graphql(body: dict[str, Any], _r: httpx.Request) -> dict[str, Any]:
        if body["query"].startswith("{ Aggregate"):
            return {"data": {"Aggregate": {"Docs": [{"meta": {"count": 12}}]}}}
        return next(pages)

    server = existing(
        routes={
            ("DELETE", "/v1/batch/objects"): {"results": {"matches": 3, "successful": 3}},
            ("POST", "/v1/graphql"): graphql,
        }
    )
    store = open_w(server)
    assert store.delete(source="a.txt") == 3
    assert store.delete(ids=["p", "q"]) == 3
    by_source, by_ids = server.sent("DELETE", "/v1/batch/objects")
    assert by_source["match"] == {
        "class": "Docs",
        "where": {"path": ["source"], "operator": "Equal", "valueText": "a.txt"},
    }
    assert by_ids["match"]["where"]["valueTextArray"] == [uuid_for("p"), uuid_for("q")]
    assert store.count() == 12
    ids = store.ids(source="a")
    assert len(ids) == 501 and "z" in ids
    queries = [b["query"] for b in server.sent("POST", "/v1/graphql")]
    assert 'after: "u999"' in queries[-1]


def test_api_key_is_a_bearer_token() -> None:
    server = existing()
    open_w(server, api_key="secret", https=True)
    req = server.requests[0][3]
    assert req.headers["authorization"] == "Bearer secret" and req.url.scheme == "https"


def test_an_older_class_gets_section_index_before_its_first_write() -> None:
    fake = FakeWeaviate()
    # A class made before section_index existed, holding one object.
    old_props = [{"name": n} for n in PROPERTIES if n != "section_index"]
    old_object = {
        "vs_id": "old",
        "text": "old text",
        "source": "old.txt",
        "model": "test-model",
        "start_offset": 0,
        "end_offset": 8,
        "chunk_index": 0,
        "headings": [],
        "metadata_json": "{}",
    }
    fake.classes["Docs"] = {
        "schema": {**SCHEMA, "properties": old_props},
        "objects": {uuid_for("old"): {"properties": old_object, "vector": [1.0, 0.0, 0.0, 0.0]}},
    }
    transport = httpx.MockTransport(fake)
    q = np.array([1, 0, 0, 0], dtype=np.float32)
    reader = open_store("weaviate://wv.test:8080", "docs", mode="r", transport=transport)
    assert [(h.id, h.section_index) for h in reader.search(q, k=5)] == [("old", 0)]
    # Weaviate refuses a query naming a property the class lacks: the reader leaves it out.
    queries = [b["query"] for _m, p, b, _r in fake.requests if p == "/v1/graphql"]
    assert queries and all("section_index" not in text for text in queries)
    assert not any(m == "POST" and "properties" in p for m, p, *_ in fake.requests)
    writer = open_store("weaviate://wv.test:8080", "docs", dim=4, transport=transport)
    records = make_records(3, dim=4)
    writer.upsert(records)  # the fake refuses properties the class lacks
    added = [b for m, p, b, _ in fake.requests if p == "/v1/schema/Docs/properties"]
    assert {"name": "section_index", "dataType": ["int"]} in added
    hits = {h.id: h.section_index for h in writer.search(q, k=10)}
    assert hits == {"old": 0, **{r.id: r.section_index for r in records}}
    assert [hits[r.id] for r in records] == [1, 3, 5]


def test_contract_and_side_table_against_a_stateful_weaviate() -> None:
    fake = FakeWeaviate()
    store = open_store(
        "weaviate://wv.test:8080", "docs", dim=16, transport=httpx.MockTransport(fake)
    )
    left = check_contract(store)
    check_side_table(store)
    side = fake.classes["Docs__vs_manifest"]["schema"]
    assert side["vectorIndexConfig"] == {"skip": True}
    assert {p["name"] for p in side["properties"]} == {"key", "doc"}
    assert len(fake.classes["Docs"]["objects"]) == len(left)
    # Rows are stored under the UUID5 of their key, with no vector.
    table = store.side_table("manifest")
    table.put_many({"k": {"a": 1}})
    row = fake.classes["Docs__vs_manifest"]["objects"][uuid_for("k")]
    assert row["vector"] is None and row["properties"] == {"key": "k", "doc": '{"a": 1}'}
    store.close()


def test_side_table_before_the_class_exists() -> None:
    fake = FakeWeaviate()
    store = open_store("weaviate://wv.test:8080", "fresh", transport=httpx.MockTransport(fake))
    table = store.side_table("manifest")
    assert table.get_many(["a"]) == {} and list(table.scan()) == []
    table.delete_many(["a"])
    assert fake.classes == {}
    table.put_many({"a": {"x": None}})
    assert store.side_table("manifest").get_many(["a"]) == {"a": {"x": None}}
    assert store.count() == 0 and "Fresh" not in fake.classes


def test_a_reader_reads_side_tables_and_cannot_write_them() -> None:
    reader = open_store(
        "weaviate://wv.test:8080",
        "docs",
        dim=16,
        mode="r",
        transport=httpx.MockTransport(FakeWeaviate()),
    )
    table = reader.side_table("manifest")
    assert table.get_many(["a"]) == {} and list(table.scan()) == []
    with pytest.raises(StoreError, match="read-only"):
        table.put_many({"a": {"x": 1}})
    with pytest.raises(StoreError, match="read-only"):
        table.delete_many(["a"])
