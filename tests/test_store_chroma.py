"""Chroma adapter against a real persistent Chroma folder."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from _servers_support import (
    check_contract,
    check_side_table,
    make_records,
    recall_at_10,
    wait_for,
)
from vectorstream.errors import (
    ConfigError,
    MissingDependencyError,
    RecordRejectedError,
    StoreError,
)
from vectorstream.stores import open_store
from vectorstream.types import Record

chromadb = pytest.importorskip("chromadb")


def test_contract(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "docs", dim=16)
    check_contract(store)
    store.close()


def test_records_are_read_back_by_the_native_client(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "docs", dim=16)
    records = make_records(20)
    store.upsert(records)
    store.close()
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(tmp_path), settings=Settings(anonymized_telemetry=False)
    )
    col = client.get_collection("docs")
    got = col.get(ids=[records[4].id], include=["documents", "metadatas"])
    meta = got["metadatas"][0]
    assert got["documents"][0] == records[4].text and meta["source"] == records[4].source
    assert json.loads(meta["metadata"]) == dict(records[4].metadata)
    assert meta["metadata.lang"] == records[4].metadata["lang"]
    res = col.query(query_embeddings=[records[4].embedding.as_dense().tolist()], n_results=1)
    assert res["ids"][0][0] == records[4].id and res["distances"][0][0] == pytest.approx(
        0.0, abs=1e-4
    )


def test_reopen_checks_dimension_and_wrong_dimension_is_rejected(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "docs", dim=8)
    store.upsert(make_records(5, dim=8))
    store.close()
    again = open_store(f"chroma:{tmp_path}", "docs")
    assert again.dim == 8 and again.count() == 5
    bad = make_records(1, dim=3)[0]
    with pytest.raises(RecordRejectedError, match="dimension"):
        again.upsert([Record(**{f: getattr(bad, f) for f in Record.__dataclass_fields__})])
    with pytest.raises(ConfigError, match="dimension 8"):
        open_store(f"chroma:{tmp_path}", "docs", dim=16, mode="r")
    assert again.search(np.ones(8, dtype=np.float32), k=50)[0].id in again.ids()
    again.close()


def test_missing_client_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "chromadb", None)
    with pytest.raises(MissingDependencyError, match=r"vectorstream\[chroma\]"):
        open_store(f"chroma:{tmp_path}", "docs", dim=4)


def test_recall_at_10_on_2000_vectors(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "recall", dim=384)
    assert recall_at_10(store, 2000, n_queries=30) >= 0.95
    store.close()


@pytest.mark.slow
def test_recall_at_10_on_10000_vectors(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "recall", dim=384)
    assert recall_at_10(store, 10_000, n_queries=100) >= 0.95
    store.close()


def test_a_second_writer_fails_fast_and_readers_are_not_blocked(tmp_path) -> None:
    from vectorstream.errors import StoreLockedError

    writer = open_store(f"chroma:{tmp_path}", "docs", dim=4)
    writer.upsert(make_records(3, dim=4))
    with pytest.raises(StoreLockedError, match="already writing"):
        open_store(f"chroma:{tmp_path}", "other", dim=4)
    reader = open_store(f"chroma:{tmp_path}", "docs", mode="r")
    assert reader.count() == 3
    reader.close()
    writer.close()
    again = open_store(f"chroma:{tmp_path}", "docs")  # the lock went with close()
    assert again.count() == 3
    again.close()


# -- side tables, and readers beside a writer in another process ------------------------------


def test_side_table_contract(tmp_path) -> None:
    store = open_store(f"chroma:{tmp_path}", "docs", dim=16)
    check_side_table(store)  # before any record: the side table needs no collection
    store.upsert(make_records(20))
    check_side_table(store)
    store.side_table("manifest").put_many({"a": {"n": 1}})
    store.close()
    # It is a Chroma collection beside the records', and comes back on reopening.
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(tmp_path), settings=Settings(anonymized_telemetry=False)
    )
    assert sorted(c.name for c in client.list_collections()) == ["docs", "docs__vs_manifest"]
    again = open_store(f"chroma:{tmp_path}", "docs", mode="r")
    assert again.count() == 20
    table = again.side_table("manifest")
    assert dict(table.scan()) == {"a": {"n": 1}}
    with pytest.raises(StoreError, match="read-only"):
        table.put_many({"b": {}})
    again.close()


def test_side_table_names_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match="__vs_"):
        open_store(f"chroma:{tmp_path}", "docs__vs_manifest", dim=4)
    store = open_store(f"chroma:{tmp_path}", "docs", dim=4)
    with pytest.raises(ConfigError, match="side table names"):
        store.side_table("Bad Name")
    store.close()


def test_search_and_the_server_answer_while_another_process_writes(tmp_path) -> None:
    """The defect: readers took the writer's lock, so a search failed during an ingest."""
    import asyncio

    from _hold_store import held
    from _server_support import FakeEmbedder, client_for
    from vectorstream import search
    from vectorstream.server import ServerSettings, create_app

    uri = f"chroma:{tmp_path}"
    with held(uri, "docs", "write") as writer:
        # (a) the library's search, opening the folder by URI.
        hits = search(
            "how do I bake bread in the oven",
            store=uri,
            collection="docs",
            model=FakeEmbedder(),
            k=3,
        )
        assert hits and hits[0].source == "cooking-bread"

        # (b) the service, in process, with its read-only handle on the same folder.
        async def main() -> None:
            app = create_app(ServerSettings(store=uri, collection="docs"), model=FakeEmbedder())
            async with client_for(app) as client:
                for _ in range(3):
                    r = await client.post(
                        "/v1/search",
                        json={
                            "query": "ripe tomatoes, onions and garlic simmered in olive oil",
                            "k": 3,
                        },
                    )
                    assert r.status_code == 200, r.text
                    assert r.json()["data"][0]["source"] == "cooking-soup"
                    await asyncio.sleep(0.1)

        asyncio.run(main())
        # The reader sees the writer's progress, records and side table alike.
        reader = open_store(uri, "docs", mode="r")
        before = reader.count()
        manifest = reader.side_table("manifest")
        rounds = manifest.get_many(["corpus"])["corpus"]["rounds"]
        assert writer.poll() is None  # still writing
        assert wait_for(lambda: reader.count() > before, timeout=30)
        assert wait_for(lambda: manifest.get_many(["corpus"])["corpus"]["rounds"] > rounds, 30)
        reader.close()
