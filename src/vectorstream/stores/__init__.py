"""Vector stores, selected by URI. Each adapter imports its vendor client lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ._kinds import check_kind, refuse_kind
from .base import (
    Query,
    StoreCapabilities,
    VectorStore,
    Where,
    dipr_cut,
    matches,
    parse_where,
    validate_where,
)


@dataclass(frozen=True, slots=True)
class StoreKind:
    """A catalogue entry: the URI schemes an adapter answers and where its class lives."""

    name: str
    schemes: tuple[str, ...]
    target: str  # "module:Class", relative to this package
    extra: str | None = None


CATALOGUE: tuple[StoreKind, ...] = (
    StoreKind("lancedb", ("lancedb",), ".lancedb:LanceDBStore"),
    StoreKind("parquet", ("parquet",), ".files:ParquetSink"),
    StoreKind("jsonl", ("jsonl",), ".files:JSONLSink"),
    StoreKind("safetensors", ("safetensors",), ".safetensors:SafetensorsStore"),
    StoreKind(
        "pgvector", ("postgresql", "postgres", "pgvector"), ".pgvector:PgVectorStore", "pgvector"
    ),
    StoreKind("qdrant", ("qdrant", "qdrant-edge"), ".qdrant:QdrantStore", "qdrant"),
    StoreKind("milvus", ("milvus",), ".milvus:MilvusStore", "milvus"),
    StoreKind("chroma", ("chroma",), ".chroma:ChromaStore", "chroma"),
    StoreKind(
        "elasticsearch",
        ("elasticsearch", "es"),
        ".elasticsearch:ElasticsearchStore",
        "elasticsearch",
    ),
    StoreKind("opensearch", ("opensearch",), ".elasticsearch:OpenSearchStore", "opensearch"),
    StoreKind("weaviate", ("weaviate",), ".weaviate:WeaviateStore", "weaviate"),
    StoreKind("pinecone", ("pinecone",), ".pinecone:PineconeStore", "pinecone"),
)


def scheme_of(uri: str) -> str:
    """``lancedb://x`` → ``lancedb``; ``qdrant:PATH`` → ``qdrant``; a bare path → ``lancedb``."""
    head, sep, _ = uri.partition(":")
    if not sep or "/" in head or len(head) == 1:  # a bare path, or a Windows drive letter
        return "lancedb"
    return head.lower()


def store_kind(uri: str) -> StoreKind:
    scheme = scheme_of(uri)
    for kind in CATALOGUE:
        if scheme in kind.schemes:
            return kind
    known = sorted(s for k in CATALOGUE for s in k.schemes)
    raise ConfigError(f"unknown store URI scheme {scheme!r} in {uri!r}; known schemes: {known}")


def certainly_new(uri: str, collection: str) -> bool:
    """Whether ``collection`` at ``uri`` certainly does not exist yet, with none of its side tables
    (so no manifest rows), told without importing the store's client or connecting.

    Only a LanceDB folder can tell this cheaply (from its file names); every other store answers
    False, which is always safe: the caller then asks the opened store.
    """
    if store_kind(uri).name != "lancedb":
        return False
    from ._lance_path import may_hold, path_of

    return not may_hold(path_of(uri), collection)


def open_store(
    uri: str,
    collection: str = "documents",
    *,
    dim: int | None = None,
    kind: str | None = None,
    **options: Any,
) -> VectorStore:
    """Open (creating when ``dim`` is given and it does not exist) the collection at ``uri``.

    ``kind`` is the embedding kind of the collection (``"dense"``, ``"sparse"`` or
    ``"multivector"``): what a new collection is made for (dense when not given); an existing
    collection's kind is read back from it (``store.kind``), and asking for another one is a
    ``ConfigError`` naming both. An adapter that cannot hold ``kind`` refuses it here.
    """
    wanted = None if kind is None else check_kind(kind)
    entry = store_kind(uri)
    module_name, _, cls_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(__name__):
            raise ConfigError(f"the {entry.name} adapter is not available in this build") from exc
        raise
    cls = getattr(module, cls_name)
    kinds: frozenset[str] = cls.capabilities.kinds
    if wanted is not None and wanted not in kinds:
        raise refuse_kind(entry.name, wanted, sorted(kinds))
    if wanted is not None and kinds != {"dense"}:
        options["kind"] = wanted  # dense-only adapters take no kind option
    store: VectorStore = cls.open(uri, collection, dim=dim, **options)
    return store


__all__ = [
    "CATALOGUE",
    "Query",
    "StoreCapabilities",
    "StoreKind",
    "VectorStore",
    "Where",
    "certainly_new",
    "dipr_cut",
    "matches",
    "open_store",
    "parse_where",
    "scheme_of",
    "store_kind",
    "validate_where",
]
