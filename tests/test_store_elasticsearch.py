"""Elasticsearch and OpenSearch adapters at the HTTP seam (no server runs on this machine).

Each test answers the adapter's requests with an ``httpx.MockTransport`` and checks the method,
path and body it sent, and what it made of the answer. Sparse collections are in
``test_store_elasticsearch_sparse.py``.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from _servers_support import FakeServer, check_contract, check_side_table, make_records
from _vendor_fakes import FakeSearchEngine
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError, StoreUnavailableError
from vectorstream.stores import open_store
from vectorstream.stores.retry import RetryPolicy, write_with_retry


# An index as this version makes it has section_index; ``section=False`` is one made before.
def es_mapping(dim: int, *, section: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {"embedding": {"type": "dense_vector", "dims": dim}}
    if section:
        props["section_index"] = {"type": "integer"}
    return {"docs": {"mappings": {"properties": props}}}


def os_mapping(dim: int, *, section: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {"embedding": {"type": "knn_vector", "dimension": dim}}
    if section:
        props["section_index"] = {"type": "integer"}
    return {"docs": {"mappings": {"properties": props}}}


def open_es(server: FakeServer, scheme: str = "elasticsearch", dim: int | None = 4, **kw: Any):
    return open_store(
        f"{scheme}://es.test:9200", "docs", dim=dim, transport=httpx.MockTransport(server), **kw
    )


def test_es_creates_an_index_with_a_cosine_dense_vector() -> None:
    server = FakeServer({("PUT", "/docs"): {"acknowledged": True}})
    store = open_es(server)
    (body,) = server.sent("PUT", "/docs")
    emb = body["mappings"]["properties"]["embedding"]
    assert emb == {"type": "dense_vector", "dims": 4, "index": True, "similarity": "cosine"}
    assert body["mappings"]["properties"]["source"] == {"type": "keyword"}
    tmpl = body["mappings"]["dynamic_templates"][0]["metadata_strings"]
    assert tmpl["path_match"] == "metadata.*" and tmpl["mapping"] == {"type": "keyword"}
    assert store.dim == 4
    assert str(server.requests[0][3].url) == "http://es.test:9200/docs/_mapping"


def test_os_creates_a_knn_index_with_lucene_hnsw() -> None:
    server = FakeServer({("PUT", "/docs"): {"acknowledged": True}})
    open_es(server, "opensearch", dim=8)
    (body,) = server.sent("PUT", "/docs")
    assert body["settings"] == {"index": {"knn": True}}
    emb = body["mappings"]["properties"]["embedding"]
    assert emb["type"] == "knn_vector" and emb["dimension"] == 8
    assert emb["method"] == {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"}


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_an_older_index_gets_section_index_in_its_mapping_when_opened_for_writing(
    flavor: str,
) -> None:
    mapping = es_mapping if flavor == "elasticsearch" else os_mapping
    old = _hit("old", 0.9)  # a document written before section_index existed
    new = _hit("new", 0.8, section_index=6)
    routes: dict[tuple[str, str], Any] = {
        ("GET", "/docs/_mapping"): mapping(4, section=False),
        ("PUT", "/docs/_mapping"): {"acknowledged": True},
        ("POST", "/docs/_search"): {"hits": {"hits": [old, new]}},
        ("POST", "/_bulk"): {"errors": False, "items": []},
    }
    # A reader alters nothing and reads the older documents as section 0.
    read_server = FakeServer(routes)
    reader = open_es(read_server, flavor, mode="r")
    assert [h.section_index for h in reader.search(np.ones(4, dtype=np.float32), k=2)] == [0, 6]
    assert not read_server.sent("PUT", "/docs/_mapping")
    # A writer types the field first (as a new index has it), then writes it.
    server = FakeServer(routes)
    writer = open_es(server, flavor)
    (put,) = server.sent("PUT", "/docs/_mapping")
    assert put == {"properties": {"section_index": {"type": "integer"}}}
    record = make_records(1, dim=4)[0]
    writer.upsert([record])
    (lines,) = server.sent("POST", "/_bulk")
    assert lines[1]["section_index"] == record.section_index == 1
    # An index that has the field is left as it is.
    current = FakeServer({**routes, ("GET", "/docs/_mapping"): mapping(4)})
    open_es(current, flavor)
    assert not current.sent("PUT", "/docs/_mapping")


def test_a_new_index_maps_section_index_as_an_integer() -> None:
    server = FakeServer({("PUT", "/docs"): {"acknowledged": True}})
    open_es(server)
    (body,) = server.sent("PUT", "/docs")
    assert body["mappings"]["properties"]["section_index"] == {"type": "integer"}


def test_existing_index_dimension_is_read_and_checked() -> None:
    server = FakeServer({("GET", "/docs/_mapping"): es_mapping(16)})
    assert open_es(server, dim=None).dim == 16
    with pytest.raises(ConfigError, match="dimension 16, not 4"):
        open_es(server, dim=4)
    assert not server.sent("PUT", "/docs")
    assert (
        open_es(FakeServer({("GET", "/docs/_mapping"): os_mapping(3)}), "opensearch", dim=None).dim
        == 3
    )


def test_bulk_upsert_sends_ndjson_with_our_ids_and_fields() -> None:
    server = FakeServer(
        {
            ("GET", "/docs/_mapping"): es_mapping(4),
            ("POST", "/_bulk"): {"errors": False, "items": []},
        }
    )
    store = open_es(server)
    records = make_records(3, dim=4)
    store.upsert([records[0], records[1], records[2], records[1]])  # a repeated id is sent once
    (lines,) = server.sent("POST", "/_bulk")
    assert server.requests[-1][3].headers["content-type"] == "application/x-ndjson"
    actions, docs = lines[0::2], lines[1::2]
    assert [a["index"]["_id"] for a in actions] == [records[0].id, records[2].id, records[1].id]
    assert all(a["index"]["_index"] == "docs" for a in actions)
    doc = docs[0]
    assert doc["id"] == records[0].id and doc["source"] == records[0].source
    assert doc["metadata"] == dict(records[0].metadata) and doc["headings"] == list(
        records[0].headings
    )
    assert doc["embedding"] == pytest.approx(records[0].embedding.as_dense().tolist())


def test_bulk_item_errors_become_rejections_and_the_writer_keeps_the_rest() -> None:
    records = make_records(6, dim=4)
    bad = records[2].id
    written: list[str] = []

    def bulk(lines: list[dict[str, Any]], _req: httpx.Request) -> dict[str, Any]:
        items = []
        for action in lines[0::2]:
            _id = action["index"]["_id"]
            if _id == bad:
                err = {"type": "mapper_parsing_exception", "reason": "failed to parse field [page]"}
                items.append({"index": {"_id": _id, "status": 400, "error": err}})
            else:
                written.append(_id)
                items.append({"index": {"_id": _id, "status": 201}})
        return {"errors": any("error" in i["index"] for i in items), "items": items}

    server = FakeServer({("GET", "/docs/_mapping"): es_mapping(4), ("POST", "/_bulk"): bulk})
    store = open_es(server)
    with pytest.raises(RecordRejectedError) as info:
        store.upsert(records)
    assert info.value.rejected == {bad: "mapper_parsing_exception: failed to parse field [page]"}
    seen: list[tuple[str, str]] = []
    result = write_with_retry(store, records, on_rejected=lambda r, why: seen.append((r.id, why)))
    assert [s[0] for s in seen] == [bad] and "page" in seen[0][1]
    assert result.written == 5


def test_overloaded_bulk_is_transient_and_retried() -> None:
    calls = {"n": 0}

    def bulk(lines: list[dict[str, Any]], _req: httpx.Request) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, json={"error": "too many requests"})
        if calls["n"] == 2:
            item = {
                "index": {
                    "_id": lines[0]["index"]["_id"],
                    "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "queue full"},
                }
            }
            return {"errors": True, "items": [item]}
        return {"errors": False, "items": []}

    server = FakeServer({("GET", "/docs/_mapping"): es_mapping(4), ("POST", "/_bulk"): bulk})
    store = open_es(server)
    result = write_with_retry(
        store, make_records(2, dim=4), RetryPolicy(base_delay=0.001, max_delay=0.01)
    )
    assert result.retries == 2 and result.written == 2 and calls["n"] == 3


def _hit(rid: str, cosine: float, **src: Any) -> dict[str, Any]:
    return {
        "_id": rid,
        "_score": (1 + cosine) / 2,
        "_source": {
            "text": "t",
            "source": "s.txt",
            "chunk_index": 2,
            "page": None,
            "headings": ["H"],
            "metadata": {"lang": "en"},
            **src,
        },
    }


def test_es_search_builds_a_filtered_knn_query_and_reports_cosine() -> None:
    answer = {"hits": {"hits": [_hit("a", 0.9), _hit("b", 0.5)]}}
    server = FakeServer(
        {("GET", "/docs/_mapping"): es_mapping(4), ("POST", "/docs/_search"): answer}
    )
    store = open_es(server)
    hits = store.search(
        np.array([1, 0, 0, 0], dtype=np.float32),
        k=2,
        where={"source": ["x", "y"], "metadata.lang": "en"},
    )
    (body,) = server.sent("POST", "/docs/_search")
    knn = body["knn"]
    assert knn["field"] == "embedding" and knn["k"] == 2 and knn["num_candidates"] == 100
    assert knn["query_vector"] == [1, 0, 0, 0]
    assert knn["filter"] == [
        {"terms": {"source": ["x", "y"]}},
        {"terms": {"metadata.lang": ["en"]}},
    ]
    assert body["_source"] == {"excludes": ["embedding"]} and "similarity" not in knn
    assert [h.id for h in hits] == ["a", "b"]
    assert [h.score for h in hits] == pytest.approx([0.9, 0.5])
    assert (
        hits[0].headings == ("H",) and hits[0].metadata == {"lang": "en"} and hits[0].page is None
    )


def test_es_range_search_uses_the_native_similarity_bound() -> None:
    answers = iter(
        [{"hits": {"hits": [_hit("a", 0.8)]}}, {"hits": {"hits": [_hit("b", 0.7), _hit("a", 0.8)]}}]
    )
    server = FakeServer(
        {
            ("GET", "/docs/_mapping"): es_mapping(4),
            ("POST", "/docs/_search"): lambda b, r: next(answers),
        }
    )
    store = open_es(server)
    hits = store.range_search(np.ones(4, dtype=np.float32), 0.25, limit=50)
    first, second = server.sent("POST", "/docs/_search")
    assert first["knn"]["k"] == 1
    assert second["knn"]["k"] == 50 and second["knn"]["similarity"] == pytest.approx(0.55, abs=2e-6)
    assert [h.id for h in hits] == ["a", "b"]


def test_os_search_and_range_use_the_knn_query_and_min_score() -> None:
    answers = iter(
        [
            {"hits": {"hits": [_hit("a", 0.6)]}},
            {"hits": {"hits": [_hit("a", 0.6)]}},
            {"hits": {"hits": [_hit("a", 0.6)]}},
        ]
    )
    server = FakeServer(
        {
            ("GET", "/docs/_mapping"): os_mapping(4),
            ("POST", "/docs/_search"): lambda b, r: next(answers),
        }
    )
    store = open_es(server, "opensearch")
    store.search(np.ones(4, dtype=np.float32), k=3, where={"page": 2})
    store.range_search(np.ones(4, dtype=np.float32), 0.2, limit=9)
    s1, r1, r2 = server.sent("POST", "/docs/_search")
    assert r1["query"]["knn"]["embedding"]["k"] == 1
    clause = s1["query"]["knn"]["embedding"]
    assert clause["k"] == 3 and s1["size"] == 3
    assert clause["filter"] == {"bool": {"filter": [{"terms": {"page": [2]}}]}}
    radial = r2["query"]["knn"]["embedding"]
    assert (
        "k" not in radial
        and radial["min_score"] == pytest.approx((1 + 0.4) / 2, abs=2e-6)
        and r2["size"] == 9
    )


def test_deletes_count_ids_and_refresh() -> None:
    pages = iter(
        [
            {"hits": {"hits": [{"_id": f"id{i}", "sort": [f"id{i}"]} for i in range(5000)]}},
            {"hits": {"hits": [{"_id": "last", "sort": ["last"]}]}},
        ]
    )
    server = FakeServer(
        {
            ("GET", "/docs/_mapping"): es_mapping(4),
            ("POST", "/docs/_delete_by_query"): {"deleted": 7},
            ("GET", "/docs/_count"): {"count": 42},
            ("POST", "/docs/_search"): lambda b, r: next(pages),
            ("POST", "/docs/_refresh"): {},
        }
    )
    store = open_es(server)
    assert store.delete(source="a.txt") == 7
    assert store.delete(ids=["x", "y"]) == 7
    by_source, by_ids = server.sent("POST", "/docs/_delete_by_query")
    assert by_source == {"query": {"term": {"source": "a.txt"}}}
    assert by_ids == {"query": {"ids": {"values": ["x", "y"]}}}
    assert server.requests[-1][3].url.params["refresh"] == "true"
    assert store.count() == 42
    ids = store.ids(source="a.txt")
    assert len(ids) == 5001 and "last" in ids
    first, second = server.sent("POST", "/docs/_search")
    assert (
        first["query"] == {"bool": {"filter": [{"terms": {"source": ["a.txt"]}}]}}
        and first["_source"] is False
    )
    assert second["search_after"] == ["id4999"]
    store.flush()
    assert server.sent("POST", "/docs/_refresh")
    with pytest.raises(ConfigError):
        store.delete()


def test_http_failures_are_translated() -> None:
    def down(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(StoreUnavailableError, match="Elasticsearch unavailable") as info:
        open_store("es://es.test:9200", "docs", dim=4, transport=httpx.MockTransport(down))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    server = FakeServer({("GET", "/docs/_mapping"): httpx.Response(503, text="busy")})
    with pytest.raises(StoreUnavailableError, match="503"):
        open_es(server)
    server = FakeServer({("GET", "/docs/_mapping"): httpx.Response(401, text="no")})
    with pytest.raises(StoreError, match="401") as info2:
        open_es(server)
    assert not isinstance(info2.value, StoreUnavailableError | RecordRejectedError)


def test_api_key_header_and_bad_names() -> None:
    server = FakeServer({("GET", "/docs/_mapping"): es_mapping(4)})
    open_es(server, api_key="k123", https=True)
    req = server.requests[0][3]
    assert req.headers["authorization"] == "ApiKey k123" and req.url.scheme == "https"
    with pytest.raises(ConfigError, match="lowercase"):
        open_store("es://es.test:9200", "Docs", dim=4, transport=httpx.MockTransport(server))
    with pytest.raises(ConfigError, match="unknown"):
        open_es(server, colour="red")


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_contract_and_side_table_against_a_stateful_engine(flavor: str) -> None:
    engine = FakeSearchEngine(flavor)
    transport = httpx.MockTransport(engine)
    store = open_store(f"{flavor}://es.test:9200", "docs", dim=16, transport=transport)
    left = check_contract(store)
    check_side_table(store)
    # The side table is its own hidden index; the collection's index holds only records.
    side = engine.indices["docs__vs_manifest"]
    assert side["body"]["settings"] == {"index": {"hidden": True}}
    assert side["body"]["mappings"]["properties"]["doc"] == {"type": "object", "enabled": False}
    assert len(engine.indices["docs"]["docs"]) == len(left)
    # Every side-table write waits for the refresh that makes it visible to every reader.
    side_writes = [
        req
        for _m, path, lines, req in engine.requests
        if path == "/_bulk" and next(iter(lines[0].values()))["_index"] == "docs__vs_manifest"
    ]
    assert len(side_writes) == 4  # put, overwrite, delete, clear
    assert all(req.url.params["refresh"] == "wait_for" for req in side_writes)
    store.close()


def test_side_table_on_a_fresh_store_and_long_keys() -> None:
    engine = FakeSearchEngine()
    transport = httpx.MockTransport(engine)
    store = open_store("es://es.test:9200", "fresh", transport=transport)
    table = store.side_table("manifest")
    assert table.get_many(["a"]) == {} and list(table.scan()) == [] and store.count() == 0
    table.delete_many(["a"])  # nothing there: no index is created for it
    assert "fresh__vs_manifest" not in engine.indices
    long_key = "/deep/" + "é" * 400  # over Elasticsearch's 512-byte _id bound
    table.put_many({long_key: {"n": 1}, "~tilde": {"n": 2}})
    again = store.side_table("manifest")
    assert again.get_many([long_key, "~tilde"]) == {long_key: {"n": 1}, "~tilde": {"n": 2}}
    assert dict(again.scan()) == {long_key: {"n": 1}, "~tilde": {"n": 2}}
    ids = set(engine.indices["fresh__vs_manifest"]["docs"])
    assert long_key not in ids and all(len(i.encode()) <= 512 for i in ids)
    with pytest.raises(ConfigError, match="side table names"):
        store.side_table("Bad-Name")


def test_a_reader_reads_side_tables_and_cannot_write_them() -> None:
    reader = open_store(
        "es://es.test:9200",
        "docs",
        dim=16,
        mode="r",
        transport=httpx.MockTransport(FakeSearchEngine()),
    )
    table = reader.side_table("manifest")
    assert table.get_many(["a"]) == {} and list(table.scan()) == []
    with pytest.raises(StoreError, match="read-only"):
        table.put_many({"a": {"x": 1}})
    with pytest.raises(StoreError, match="read-only"):
        table.delete_many(["a"])
