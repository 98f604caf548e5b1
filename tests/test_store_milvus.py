"""Milvus adapter against Milvus Lite: as a file, and as a `milvus-lite server` process."""

from __future__ import annotations

import sys

import pytest

from _servers_support import (
    MilvusLiteServer,
    check_contract,
    check_side_table,
    free_port,
    make_records,
    recall_at_10,
    unique_name,
)
from vectorstream.errors import (
    ConfigError,
    MissingDependencyError,
    StoreError,
    StoreUnavailableError,
)
from vectorstream.stores import open_store

pymilvus = pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def lite_server(tmp_path_factory):
    """`milvus-lite server` as its own process on a free loopback port."""
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server.uri
    server.stop()


def test_contract_on_a_lite_file(tmp_path) -> None:
    store = open_store(f"milvus:{tmp_path / 'v.db'}", "docs", dim=16)
    check_contract(store)
    store.close()


def test_contract_on_a_lite_server(lite_server) -> None:
    store = open_store(lite_server, unique_name("docs"), dim=16)
    check_contract(store)
    store.close()


def _old_collection(client, name: str, records) -> None:
    """A collection as the previous version made it (no section_index field), with rows."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=4096)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=16)
    for field in ("text", "source", "model"):
        schema.add_field(field, DataType.VARCHAR, max_length=4096)
    for field in ("page", "start_offset", "end_offset", "chunk_index"):
        schema.add_field(field, DataType.INT64)
    schema.add_field("headings", DataType.JSON)
    schema.add_field("metadata", DataType.JSON)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    rows = [
        {
            "id": r.id,
            "vector": r.embedding.as_dense().tolist(),
            "text": r.text,
            "source": r.source,
            "model": r.model,
            "page": -1 if r.page is None else r.page,
            "start_offset": r.start,
            "end_offset": r.end,
            "chunk_index": r.chunk_index,
            "headings": list(r.headings),
            "metadata": dict(r.metadata),
        }
        for r in records
    ]
    client.upsert(name, rows)


@pytest.mark.parametrize("where", ["file", "server"])
def test_a_collection_made_before_section_index_keeps_working(
    where: str, lite_server, tmp_path
) -> None:
    name = unique_name("old")
    old = make_records(6)
    if where == "server":
        uri, native = lite_server, lite_server.replace("milvus://", "http://")
    else:
        uri, native = f"milvus:{tmp_path / 'old.db'}", str(tmp_path / "old.db")
    client = pymilvus.MilvusClient(uri=native)
    _old_collection(client, name, old)
    q = old[2].embedding.as_dense()
    reader = open_store(uri, name, mode="r")
    hits = reader.search(q, k=6)
    assert hits[0].id == old[2].id and {h.section_index for h in hits} == {0}
    # Milvus Lite cannot add a field: the writer keeps section_index in the metadata JSON.
    writer = open_store(uri, name, dim=16)
    new = make_records(3, start=6, seed=4)
    writer.upsert(new)
    fields = {f["name"] for f in client.describe_collection(name)["fields"]}
    assert "section_index" not in fields
    for store in (writer, reader):  # the reader, opened before the write, reads it too
        got = {h.id: h for h in store.search(q, k=9)}
        assert {i: h.section_index for i, h in got.items()} == {
            **{r.id: 0 for r in old},
            **{r.id: r.section_index for r in new},
        }
        assert all(dict(got[r.id].metadata) == dict(r.metadata) for r in new)
    # Metadata filters are not disturbed by the key kept beside the record's metadata.
    fr = writer.search(q, k=9, where={"metadata.lang": "fr"})
    assert {h.id for h in fr} == {r.id for r in [*old, *new] if r.metadata["lang"] == "fr"}
    writer.upsert([old[2]])  # an old row rewritten gets its section
    assert writer.search(q, k=1)[0].section_index == old[2].section_index == 5
    reader.close()
    writer.close()
    client.close()


def test_rows_are_read_back_by_the_native_client(lite_server) -> None:
    name = unique_name("native")
    store = open_store(lite_server, name, dim=16)
    records = make_records(20)
    store.upsert(records)
    store.close()
    client = pymilvus.MilvusClient(uri=lite_server.replace("milvus://", "http://"))
    rows = client.query(
        name,
        filter=f'id == "{records[3].id}"',
        output_fields=["source", "metadata", "headings", "page"],
    )
    assert rows[0]["source"] == records[3].source and rows[0]["metadata"] == dict(
        records[3].metadata
    )
    assert rows[0]["headings"] == list(records[3].headings)
    res = client.search(
        name,
        data=[records[3].embedding.as_dense().tolist()],
        limit=1,
        search_params={"metric_type": "COSINE"},
    )
    assert res[0][0]["id"] == records[3].id and res[0][0]["distance"] == pytest.approx(
        1.0, abs=1e-4
    )
    client.close()


def test_reopen_keeps_rows_and_checks_dimension(tmp_path) -> None:
    path = tmp_path / "v.db"
    store = open_store(f"milvus:{path}", "docs", dim=8)
    store.upsert(make_records(12, dim=8))
    store.close()
    again = open_store(f"milvus:{path}", "docs")
    assert again.dim == 8 and again.count() == 12
    with pytest.raises(ConfigError, match="dimension 8"):
        open_store(f"milvus:{path}", "docs", dim=4, mode="r")
    again.close()


def test_bad_uri_and_unreachable_server() -> None:
    with pytest.raises(ConfigError, match=r"\.db"):
        open_store("milvus:/tmp/not-a-db-file", "docs", dim=4)
    with pytest.raises(StoreUnavailableError):
        open_store(f"milvus://127.0.0.1:{free_port()}", "docs", dim=4, timeout=2)


def test_missing_client_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MissingDependencyError, match=r"vectorstream\[milvus\]"):
        open_store(f"milvus:{tmp_path / 'v.db'}", "docs", dim=4)


def test_recall_at_10_on_2000_vectors(tmp_path) -> None:
    store = open_store(f"milvus:{tmp_path / 'r.db'}", "recall", dim=384)
    assert recall_at_10(store, 2000, n_queries=30) >= 0.95
    store.close()


@pytest.mark.slow
def test_recall_at_10_on_10000_vectors(tmp_path) -> None:
    store = open_store(f"milvus:{tmp_path / 'r.db'}", "recall", dim=384)
    assert recall_at_10(store, 10_000, n_queries=100) >= 0.95
    store.close()


def test_a_second_writer_on_a_lite_file_fails_fast(tmp_path) -> None:
    from vectorstream.errors import StoreLockedError

    path = tmp_path / "v.db"
    writer = open_store(f"milvus:{path}", "docs", dim=4)
    with pytest.raises(StoreLockedError, match="already writing"):
        open_store(f"milvus:{path}", "docs", dim=4)
    writer.upsert(make_records(2, dim=4))
    writer.close()
    again = open_store(f"milvus:{path}", "docs")
    assert again.count() == 2
    again.close()


def test_server_killed_mid_ingest_and_restarted_loses_nothing(tmp_path) -> None:
    import threading

    from vectorstream.stores.retry import RetryPolicy, write_with_retry

    server = MilvusLiteServer(tmp_path / "data")
    server.start()
    try:
        store = open_store(server.uri, "docs", dim=16, timeout=5)
        records = make_records(600, seed=3)
        write_with_retry(store, records[:200])
        server.kill()
        with pytest.raises(StoreUnavailableError):
            store.upsert(records[200:300])
        restart = threading.Timer(1.0, server.start)
        restart.start()
        policy = RetryPolicy(max_attempts=200, base_delay=0.2, max_delay=1.0, deadline=90)
        result = write_with_retry(store, records[200:], policy)
        restart.join()
        assert result.retries >= 1 and result.written == 400
        # The restarted server has its collections released; the adapter loads them again.
        assert store.count() == 600 and store.ids() == {r.id for r in records}
        store.close()
    finally:
        server.stop()


# -- side tables, and a second process on a Milvus Lite file ----------------------------------


def test_side_table_contract_on_a_lite_file(tmp_path) -> None:
    path = tmp_path / "v.db"
    store = open_store(f"milvus:{path}", "docs", dim=16)
    check_side_table(store)  # before any record
    store.upsert(make_records(20))
    check_side_table(store)
    store.side_table("manifest").put_many({"a": {"n": 2**62 + 1, "s": 'q"\\'}})
    store.close()
    again = open_store(f"milvus:{path}", "docs", mode="r")
    assert again.count() == 20
    table = again.side_table("manifest")
    assert dict(table.scan()) == {"a": {"n": 2**62 + 1, "s": 'q"\\'}}
    with pytest.raises(StoreError, match="read-only"):
        table.put_many({"b": {}})
    again.close()


def test_side_table_on_a_lite_server_is_a_collection_beside(lite_server) -> None:
    name = unique_name("side")
    store = open_store(lite_server, name, dim=16)
    check_side_table(store)
    store.side_table("manifest").put_many({"k": {"v": 1}})
    store.close()
    client = pymilvus.MilvusClient(uri=lite_server.replace("milvus://", "http://"))
    assert f"{name}__vs_manifest" in client.list_collections()
    client.load_collection(f"{name}__vs_manifest")
    rows = client.query(f"{name}__vs_manifest", filter='id != ""', output_fields=["key", "doc"])
    assert [(r["key"], r["doc"]) for r in rows] == [("k", '{"v": 1}')]
    client.close()


def test_a_second_process_on_a_lite_file_is_told_to_use_a_server(tmp_path) -> None:
    from _hold_store import held
    from vectorstream.errors import StoreLockedError

    uri = f"milvus:{tmp_path / 'v.db'}"
    with held(uri, "docs"):
        for mode in ("r", "w"):
            with pytest.raises(StoreLockedError, match="another process") as info:
                open_store(uri, "docs", mode=mode)
            assert "milvus://HOST:PORT" in str(info.value)
    again = open_store(uri, "docs", mode="r")  # the holder is gone
    assert again.count() == 5
    again.close()
