"""Qdrant adapter: qdrant-client local mode and Qdrant Edge, both real and in-process."""

from __future__ import annotations

import sys
import uuid

import numpy as np
import pytest

from _servers_support import check_contract, check_side_table, make_records, recall_at_10
from vectorstream.errors import ConfigError, MissingDependencyError, StoreError, StoreLockedError
from vectorstream.stores import open_store
from vectorstream.stores._common import uuid_for

qdrant_client = pytest.importorskip("qdrant_client")


@pytest.fixture(params=["qdrant", "qdrant-edge"])
def scheme(request) -> str:
    if request.param == "qdrant-edge":
        pytest.importorskip("qdrant_edge")
    return request.param


def test_contract(scheme, tmp_path) -> None:
    store = open_store(f"{scheme}:{tmp_path}", "docs", dim=16)
    check_contract(store)
    store.close()


def test_points_are_read_back_by_the_native_client(tmp_path) -> None:
    store = open_store(f"qdrant:{tmp_path}", "docs", dim=16)
    records = make_records(20)
    store.upsert(records)
    store.close()  # local mode allows one client per folder
    client = qdrant_client.QdrantClient(path=str(tmp_path))
    info = client.get_collection("docs")
    assert info.config.params.vectors.size == 16
    assert str(info.config.params.vectors.distance).lower().endswith("cosine")
    point = client.retrieve("docs", [uuid_for(records[4].id)], with_payload=True)[0]
    assert uuid.UUID(str(point.id)) == uuid.UUID(uuid_for(records[4].id))
    assert point.payload["vs_id"] == records[4].id and point.payload["source"] == records[4].source
    assert point.payload["metadata"] == dict(records[4].metadata)
    hits = client.query_points(
        "docs", query=records[4].embedding.as_dense().tolist(), limit=1
    ).points
    assert hits[0].id == point.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    client.close()


def test_edge_shard_is_read_back_natively_and_reopens(tmp_path) -> None:
    edge = pytest.importorskip("qdrant_edge")
    store = open_store(f"qdrant-edge:{tmp_path}", "docs", dim=16)
    records = make_records(20)
    store.upsert(records)
    store.close()
    shard = edge.EdgeShard.load(str(tmp_path / "docs"))
    req = edge.QueryRequest(
        limit=1,
        query=edge.Query.Nearest(records[6].embedding.as_dense().tolist(), using=""),
        with_payload=True,
    )
    top = shard.query(req)[0]
    assert top.payload["vs_id"] == records[6].id and top.score == pytest.approx(1.0, abs=1e-5)
    shard.close()
    again = open_store(f"qdrant-edge:{tmp_path}", "docs")
    assert again.dim == 16 and again.count() == 20
    again.close()


def test_second_local_client_on_the_same_folder_fails_fast(tmp_path) -> None:
    first = open_store(f"qdrant:{tmp_path}", "docs", dim=4)
    with pytest.raises(StoreLockedError, match="another process"):
        open_store(f"qdrant:{tmp_path}", "docs", dim=4)
    first.close()


def test_dimension_mismatch_and_bad_filters_are_config_errors(tmp_path) -> None:
    store = open_store(f"qdrant:{tmp_path}", "docs", dim=4)
    store.upsert(make_records(3, dim=4))
    with pytest.raises(ConfigError, match="dimension"):
        store.search(np.ones(5, dtype=np.float32))
    with pytest.raises(ConfigError, match="fractional"):
        store.search(np.ones(4, dtype=np.float32), where={"metadata.x": 0.5})
    with pytest.raises(ConfigError, match="cannot filter"):
        store.search(np.ones(4, dtype=np.float32), where={"colour": "red"})
    store.close()
    with pytest.raises(ConfigError, match="dimension 4"):
        open_store(f"qdrant:{tmp_path}", "docs", dim=8)


def test_unreachable_server_is_store_unavailable() -> None:
    from _servers_support import free_port
    from vectorstream.errors import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match="Qdrant unavailable"):
        open_store(f"qdrant://127.0.0.1:{free_port()}", "docs", dim=4, timeout=2)


def test_missing_client_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(MissingDependencyError, match=r"vectorstream\[qdrant\]"):
        open_store(f"qdrant:{tmp_path}", "docs", dim=4)


def _recall_uri(scheme: str, tmp_path) -> str:
    # Local mode commits every point to SQLite on its own (≈ 20 points/s on this disk), so the
    # recall runs use its in-memory form; the search code is the same.
    return "qdrant::memory:" if scheme == "qdrant" else f"{scheme}:{tmp_path}"


def test_recall_at_10_on_2000_vectors(scheme, tmp_path) -> None:
    store = open_store(_recall_uri(scheme, tmp_path), "recall", dim=384)
    assert recall_at_10(store, 2000, n_queries=30) >= 0.95
    store.close()


@pytest.mark.slow
def test_recall_at_10_on_10000_vectors(scheme, tmp_path) -> None:
    store = open_store(_recall_uri(scheme, tmp_path), "recall", dim=384)
    assert recall_at_10(store, 10_000, n_queries=100) >= 0.95
    store.close()


def test_a_second_edge_writer_fails_fast(tmp_path) -> None:
    pytest.importorskip("qdrant_edge")
    writer = open_store(f"qdrant-edge:{tmp_path}", "docs", dim=4)
    with pytest.raises(StoreLockedError, match="already writing"):
        open_store(f"qdrant-edge:{tmp_path}", "docs", dim=4)
    other = open_store(f"qdrant-edge:{tmp_path}", "other", dim=4)  # another collection is fine
    other.close()
    writer.upsert(make_records(2, dim=4))
    writer.close()
    again = open_store(f"qdrant-edge:{tmp_path}", "docs")
    assert again.count() == 2
    again.close()


# -- side tables, and a second process on a local-mode folder ---------------------------------


def test_side_table_contract(scheme, tmp_path) -> None:
    store = open_store(f"{scheme}:{tmp_path}", "docs", dim=16)
    check_side_table(store)  # before any record
    store.upsert(make_records(20))
    check_side_table(store)
    store.side_table("manifest").put_many({"a": {"n": 2**62 + 1}})
    store.close()
    again = open_store(f"{scheme}:{tmp_path}", "docs", mode="r")
    assert again.count() == 20
    table = again.side_table("manifest")
    assert dict(table.scan()) == {"a": {"n": 2**62 + 1}}
    with pytest.raises(StoreError, match="read-only"):
        table.delete_many(["a"])
    again.close()


def test_local_side_table_is_a_collection_without_vectors(tmp_path) -> None:
    store = open_store(f"qdrant:{tmp_path}", "docs", dim=4)
    store.side_table("manifest").put_many({"k": {"v": 1}})
    store.close()
    client = qdrant_client.QdrantClient(path=str(tmp_path))
    info = client.get_collection("docs__vs_manifest")
    assert info.config.params.vectors == {} and info.points_count == 1
    point = client.scroll("docs__vs_manifest", with_payload=True)[0][0]
    assert point.payload == {"key": "k", "doc": '{"v": 1}'}
    client.close()


def test_edge_side_table_lives_in_the_shard_folder(tmp_path) -> None:
    pytest.importorskip("qdrant_edge")
    uri = f"qdrant-edge:{tmp_path}"
    store = open_store(uri, "docs")  # no shard yet: the side table comes first
    store.side_table("manifest").put_many({"k": {"v": 1}})
    store.upsert(make_records(3, dim=4))  # the shard is created beside it
    store.close()
    assert (tmp_path / "docs" / "vectorstream.manifest.sqlite").is_file()
    again = open_store(uri, "docs", mode="r")
    assert again.count() == 3 and dict(again.side_table("manifest").scan()) == {"k": {"v": 1}}
    # A reader of a collection with no side table yet creates no file.
    assert dict(again.side_table("other").scan()) == {}
    assert not (tmp_path / "docs" / "vectorstream.other.sqlite").exists()
    again.close()


def test_a_second_process_on_a_local_folder_is_told_to_use_a_server(tmp_path) -> None:
    from _hold_store import held
    from _server_support import FakeEmbedder
    from vectorstream import search

    uri = f"qdrant:{tmp_path}"
    with held(uri, "docs"):
        for mode in ("r", "w"):
            with pytest.raises(StoreLockedError, match="another process") as info:
                open_store(uri, "docs", mode=mode)
            assert "qdrant://HOST:PORT" in str(info.value)
        with pytest.raises(StoreLockedError, match=r"qdrant://HOST:PORT"):
            search("anything", store=uri, collection="docs", model=FakeEmbedder(dim=4))
    again = open_store(uri, "docs", mode="r")  # the holder is gone
    assert again.count() == 5
    again.close()
