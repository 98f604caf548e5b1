"""The schema of a Milvus collection: reading an existing one's kind and width, creating one, and
adding ``section_index`` to a collection made before it.

``id`` is a VARCHAR primary key (our id, no mapping needed), ``vector`` a FLOAT_VECTOR(dim) with a
COSINE index (sparse: a SPARSE_FLOAT_VECTOR with a ``SPARSE_INVERTED_INDEX`` and the inner
product), ``text``, ``source``, ``model`` VARCHAR, ``page`` (−1 for none), ``start_offset``,
``end_offset``, ``chunk_index``, ``section_index`` INT64, ``headings`` and ``metadata`` JSON.
Milvus keeps no vocabulary size, so a sparse collection's properties hold it
(``vectorstream.dim``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..types import EmbeddingKind
from ._kinds import DIM_KEY, KIND_KEY

log = logging.getLogger("vectorstream.stores.milvus")

TEXT_MAX = 65_535  # Milvus' VARCHAR limit, in bytes
SHORT_MAX = 4_096
SECTION_INDEX = "section_index"


def described(desc: dict[str, Any]) -> tuple[EmbeddingKind, int | None]:
    """The kind and width of a described collection (a sparse one's from its properties)."""
    from pymilvus import DataType

    field = next(f for f in desc["fields"] if f["name"] == "vector")
    if field["type"] == DataType.SPARSE_FLOAT_VECTOR:
        raw = (desc.get("properties") or {}).get(DIM_KEY)
        return "sparse", int(raw) if raw else None
    return "dense", int(field["params"]["dim"])


def has_section_field(desc: dict[str, Any]) -> bool:
    return any(f["name"] == SECTION_INDEX for f in desc["fields"])


def add_section_field(client: Any, collection: str) -> bool:
    """Add ``section_index`` to a server's collection made before it; whether the server could."""
    if not hasattr(client, "add_collection_field"):
        return False
    from pymilvus import DataType

    try:
        client.add_collection_field(
            collection,
            field_name=SECTION_INDEX,
            data_type=DataType.INT64,
            nullable=True,  # Milvus adds fields to existing collections only nullable
            default_value=0,
        )
    except Exception as exc:  # the vendor boundary: an older server, a Lite server
        log.info(
            "Milvus could not add section_index to %r (%s); it is kept in the metadata",
            collection,
            exc,
        )
        return False
    log.info("added the section_index field to Milvus collection %r", collection)
    return True


def create_arguments(client: Any, kind: EmbeddingKind, dim: int, index_type: str) -> dict[str, Any]:
    """The keyword arguments of ``create_collection`` for ``kind`` embeddings of width ``dim``."""
    from pymilvus import DataType

    sparse = kind == "sparse"
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=SHORT_MAX)
    if sparse:
        schema.add_field("vector", DataType.SPARSE_FLOAT_VECTOR)
    else:
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("source", DataType.VARCHAR, max_length=SHORT_MAX)
    schema.add_field("model", DataType.VARCHAR, max_length=SHORT_MAX)
    for name in ("page", "start_offset", "end_offset", "chunk_index", SECTION_INDEX):
        schema.add_field(name, DataType.INT64)
    schema.add_field("headings", DataType.JSON)
    schema.add_field("metadata", DataType.JSON)
    index = client.prepare_index_params()
    if sparse:
        index.add_index(field_name="vector", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    else:
        index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE")
    return {
        "schema": schema,
        "index_params": index,
        "consistency_level": "Strong",
        # Milvus keeps no vocabulary size: the properties hold it (and the kind).
        "properties": {KIND_KEY: kind, DIM_KEY: str(dim)} if sparse else None,
    }


def metric(kind: EmbeddingKind) -> str:
    """The metric a collection of ``kind`` is indexed (and searched) with."""
    return "IP" if kind == "sparse" else "COSINE"


__all__ = [
    "SECTION_INDEX",
    "SHORT_MAX",
    "TEXT_MAX",
    "add_section_field",
    "create_arguments",
    "described",
    "has_section_field",
    "metric",
]
