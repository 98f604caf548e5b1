"""Records as Milvus rows and Milvus entities as hits, and filters as Milvus expressions.

A collection made before ``section_index`` existed, where the field could not be added (Milvus
Lite), keeps each record's ``section_index`` inside its ``metadata`` JSON under the reserved key
``__vs_section_index``, which reads strip again. Filters on ``metadata.<key>`` are ``==`` on a
JSON path (Milvus Lite refuses ``in`` there); column filters are ``in`` lists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import Record, SparseVector
from ._common import scoped_items
from ._milvus_schema import SECTION_INDEX
from .base import Where

OUTPUT = [
    "text",
    "source",
    "page",
    "start_offset",
    "end_offset",
    "chunk_index",
    "headings",
    "metadata",
]
# Where a collection without the section_index field keeps it: inside the metadata JSON.
SECTION_KEY = "__vs_section_index"


def output_fields(section_field: bool) -> list[str]:
    """The fields a search returns, for a collection with or without ``section_index``."""
    return [*OUTPUT, SECTION_INDEX] if section_field else OUTPUT


def sparse_value(sv: SparseVector) -> dict[int, float]:
    """A sparse vector as Milvus takes it: ``{term: weight}``, zeros left out."""
    return {int(i): float(v) for i, v in zip(sv.indices, sv.values, strict=True) if v}


def vector_value(r: Record) -> Any:
    """A record's vector as Milvus takes it (a sparse one as ``{term: weight}``)."""
    sv = r.embedding.sparse
    if sv is not None:
        return sparse_value(sv)
    return np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist()


def row_of(r: Record, section_field: bool) -> dict[str, Any]:
    """A record as a Milvus row (``section_field``: the collection has ``section_index``)."""
    row: dict[str, Any] = {
        "id": r.id,
        "vector": vector_value(r),
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
    if section_field:
        row[SECTION_INDEX] = r.section_index
    else:
        row["metadata"][SECTION_KEY] = r.section_index
    return row


def hit_payload(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity as ``hit_of`` reads it: ``section_index`` taken out of the metadata if there."""
    metadata = entity.get("metadata")
    if not isinstance(metadata, dict) or SECTION_KEY not in metadata:
        return entity
    metadata = dict(metadata)
    kept = metadata.pop(SECTION_KEY)
    return {**entity, "metadata": metadata, SECTION_INDEX: entity.get(SECTION_INDEX) or kept}


def literal(value: Any) -> str:
    """A value as a Milvus expression literal (JSON quoting is valid Milvus string syntax)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def filter_expr(where: Where | None, source: str | None = None) -> str:
    """The filter (narrowed to ``source`` when given) as a Milvus boolean expression."""
    parts = []
    for key, values in scoped_items(where, source):
        if key.startswith("metadata."):
            # JSON paths take `==` but not `in` in every Milvus build (Lite refuses `in`).
            field = f"metadata[{literal(key[9:])}]"
            parts.append("(" + " or ".join(f"{field} == {literal(v)}" for v in values) + ")")
        else:
            parts.append(f"{key} in [{', '.join(literal(v) for v in values)}]")
    return " and ".join(parts)


def ids_expr(ids: Sequence[str]) -> str:
    """The expression selecting rows by id."""
    return f"id in [{', '.join(literal(i) for i in ids)}]"


__all__ = [
    "OUTPUT",
    "SECTION_KEY",
    "filter_expr",
    "hit_payload",
    "ids_expr",
    "literal",
    "output_fields",
    "row_of",
    "sparse_value",
    "vector_value",
]
