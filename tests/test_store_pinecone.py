"""Pinecone adapter at the HTTP seam (Pinecone cannot be reached from this machine)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from _servers_support import FakeServer, check_contract, check_side_table, make_records
from _vendor_fakes import FakePinecone
from vectorstream.errors import ConfigError, StoreError, StoreUnavailableError
from vectorstream.stores import open_store
from vectorstream.stores.retry import RetryPolicy, write_with_retry

HOST = "idx-abc.svc.us-east1.pinecone.io"


def stats(dim: int = 4, count: int = 0, metric: str = "cosine") -> dict[str, Any]:
    return {"dimension": dim, "metric": metric, "namespaces": {"docs": {"vectorCount": count}}}


def open_p(server: FakeServer, dim: int | None = 4, **kw: Any):
    kw.setdefault("api_key", "pk-test")
    return open_store(
        f"pinecone://{HOST}", "docs", dim=dim, transport=httpx.MockTransport(server), **kw
    )


def server_with(routes: dict[tuple[str, str], Any] | None = None, **stat: Any) -> FakeServer:
    base: dict[tuple[str, str], Any] = {("POST", "/describe_index_stats"): stats(**stat)}
    base.update(routes or {})
    return FakeServer(base)


def test_open_reads_dimension_metric_and_sends_the_key(monkeypatch) -> None:
    server = server_with(dim=16, count=5)
    store = open_p(server, dim=None)
    assert store.dim == 16 and store.count() == 5
    req = server.requests[0][3]
    assert str(req.url) == f"https://{HOST}/describe_index_stats"
    assert (
        req.headers["api-key"] == "pk-test" and req.headers["x-pinecone-api-version"] == "2025-04"
    )
    with pytest.raises(ConfigError, match="dimension 16, not 4"):
        open_p(server, dim=4)
    with pytest.raises(ConfigError, match="cosine"):
        open_p(server_with(metric="dotproduct"))
    monkeypatch.delenv("PINECONE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="API key"):
        open_store(f"pinecone://{HOST}", "docs", dim=4, transport=httpx.MockTransport(server))


def test_upsert_sends_flat_metadata_in_batches_of_100() -> None:
    server = server_with(
        {("POST", "/vectors/upsert"): lambda b, r: {"upsertedCount": len(b["vectors"])}}
    )
    store = open_p(server)
    records = make_records(250, dim=4)
    store.upsert(records)
    bodies = server.sent("POST", "/vectors/upsert")
    assert [len(b["vectors"]) for b in bodies] == [100, 100, 50]
    assert all(b["namespace"] == "docs" for b in bodies)
    v = bodies[0]["vectors"][3]
    assert v["id"] == records[3].id and v["values"] == pytest.approx(
        records[3].embedding.as_dense().tolist()
    )
    meta = v["metadata"]
    assert meta["text"] == records[3].text and meta["source"] == records[3].source
    assert meta["metadata.lang"] == "en" and meta["metadata"] == '{"lang": "en", "n": 3}'
    assert all(isinstance(x, str | int | float | bool) for x in meta.values())


def test_short_acknowledgement_is_an_error_and_429_is_retried() -> None:
    server = server_with({("POST", "/vectors/upsert"): {"upsertedCount": 1}})
    with pytest.raises(StoreError, match="acknowledged 1 of 2"):
        open_p(server).upsert(make_records(2, dim=4))
    calls = {"n": 0}

    def flaky(body: dict[str, Any], _r: httpx.Request) -> Any:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(429, json={"message": "rate limited"})
        return {"upsertedCount": len(body["vectors"])}

    server = server_with({("POST", "/vectors/upsert"): flaky})
    result = write_with_retry(
        open_p(server), make_records(3, dim=4), RetryPolicy(base_delay=0.001, max_delay=0.01)
    )
    assert result.retries == 2 and result.written == 3


def test_writer_rejects_oversized_metadata_before_sending() -> None:
    server = server_with(
        {("POST", "/vectors/upsert"): lambda b, r: {"upsertedCount": len(b["vectors"])}}
    )
    store = open_p(server)
    big = make_records(1, dim=4)[0]
    from vectorstream.types import Record

    big = Record(
        **{
            **{f: getattr(big, f) for f in Record.__dataclass_fields__},
            "id": "big",
            "text": "x" * 50_000,
        }
    )
    seen: list[str] = []
    result = write_with_retry(
        store, [big, *make_records(2, dim=4)], on_rejected=lambda r, why: seen.append(why)
    )
    assert result.written == 2 and "exceeds the limit of 40960" in seen[0]
    assert all(
        v["id"] != "big" for b in server.sent("POST", "/vectors/upsert") for v in b["vectors"]
    )


def _match(rid: str, score: float) -> dict[str, Any]:
    return {
        "id": rid,
        "score": score,
        "metadata": {
            "text": "t",
            "source": "s.txt",
            "chunk_index": 4,
            "headings": '["A"]',
            "metadata": '{"k": 1}',
            "start_offset": 2,
            "end_offset": 9,
        },
    }


def test_query_with_filters_and_parsed_matches() -> None:
    server = server_with({("POST", "/query"): {"matches": [_match("a", 0.93), _match("b", 0.5)]}})
    store = open_p(server)
    hits = store.search(
        np.array([0, 1, 0, 0], dtype=np.float32),
        k=2,
        where={"source": "s.txt", "metadata.k": [1, 2]},
    )
    (body,) = server.sent("POST", "/query")
    assert body["topK"] == 2 and body["namespace"] == "docs" and body["includeMetadata"] is True
    assert body["filter"] == {
        "$and": [{"source": {"$in": ["s.txt"]}}, {"metadata.k": {"$in": [1, 2]}}]
    }
    assert body["vector"] == [0, 1, 0, 0]
    assert [h.id for h in hits] == ["a", "b"] and hits[0].score == pytest.approx(0.93)
    assert hits[0].headings == ("A",) and hits[0].metadata == {"k": 1} and hits[0].page is None


def test_range_search_widens_top_k_until_out_of_range() -> None:
    def query(body: dict[str, Any], _r: httpx.Request) -> dict[str, Any]:
        n = body["topK"]
        return {"matches": [_match(f"m{i}", 1.0 - 0.01 * i) for i in range(n)]}

    server = server_with({("POST", "/query"): query})
    hits = open_p(server).range_search(np.ones(4, dtype=np.float32), 0.5, limit=1000)
    assert [b["topK"] for b in server.sent("POST", "/query")] == [32, 128]
    assert len(hits) == 51 and hits[-1].score == pytest.approx(0.5)


def test_ids_delete_and_errors() -> None:
    pages = iter(
        [
            {"vectors": [{"id": "a"}, {"id": "b"}], "pagination": {"next": "tok"}},
            {"vectors": [{"id": "c"}]},
        ]
    )
    server = server_with(
        {
            ("GET", "/vectors/list"): lambda b, r: next(pages),
            ("POST", "/query"): {"matches": [_match("a", 0.1), _match("c", 0.1)]},
            ("POST", "/vectors/delete"): {},
            ("GET", "/vectors/fetch"): {"vectors": {"a": {}}},
        }
    )
    store = open_p(server)
    assert store.ids() == {"a", "b", "c"}
    lists = [r[3] for r in server.requests if r[1] == "/vectors/list"]
    assert lists[1].url.params["paginationToken"] == "tok"
    assert store.ids(source="s.txt") == {"a", "c"}
    probe = server.sent("POST", "/query")[-1]
    assert probe["filter"] == {"source": {"$eq": "s.txt"}} and probe["topK"] == 10_000
    assert store.delete(source="s.txt") == 2
    assert server.sent("POST", "/vectors/delete")[-1] == {
        "filter": {"source": {"$eq": "s.txt"}},
        "namespace": "docs",
    }
    assert store.delete(ids=["a", "zz"]) == 1
    assert server.sent("POST", "/vectors/delete")[-1] == {"ids": ["a"], "namespace": "docs"}
    fetch = next(r[3] for r in server.requests if r[1] == "/vectors/fetch")
    assert fetch.url.params.get_list("ids") == ["a", "zz"]

    def down(_request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(StoreUnavailableError, match="Pinecone unavailable"):
        open_store(
            f"pinecone://{HOST}", "docs", dim=4, api_key="k", transport=httpx.MockTransport(down)
        )


def test_contract_and_side_table_against_a_stateful_index() -> None:
    fake = FakePinecone(dim=16)
    store = open_p(fake, dim=16)  # type: ignore[arg-type]
    left = check_contract(store)
    check_side_table(store)
    assert set(fake.namespaces["docs"]) == {r.id for r in left}
    # The rows live in a reserved namespace, each with the same unit vector (never all zeros).
    table = store.side_table("manifest")
    table.put_many({"odd key é": {"big": 2**62}})
    (row,) = fake.namespaces["__vs_docs_manifest"].values()
    assert row["values"] == [1.0] + [0.0] * 15
    assert row["metadata"] == {"key": "odd key é", "doc": '{"big": 4611686018427387904}'}
    assert table.get_many(["odd key é"]) == {"odd key é": {"big": 2**62}}
    assert store.count() == len(left)
    store.close()


def test_side_table_rows_over_the_metadata_limit_are_refused() -> None:
    fake = FakePinecone(dim=4)
    table = open_p(fake).side_table("manifest")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="40960 bytes"):
        table.put_many({"big": {"blob": "x" * 41_000}})
    assert fake.namespaces == {}


def test_a_reader_reads_side_tables_and_cannot_write_them() -> None:
    reader = open_p(FakePinecone(dim=4), mode="r")  # type: ignore[arg-type]
    table = reader.side_table("manifest")
    assert table.get_many(["a"]) == {} and list(table.scan()) == []
    with pytest.raises(StoreError, match="read-only"):
        table.put_many({"a": {"x": 1}})
    with pytest.raises(StoreError, match="read-only"):
        table.delete_many(["a"])
