"""The record layout of the embedded stores: one Arrow schema and its serialisation.

LanceDB (a table per collection) and the file sinks (Parquet, JSON Lines) keep a record as the
same columns under the same names, so a file written by a sink loads into a LanceDB table as is::

    id             string, not null   deterministic record id (merge key of upserts)
    vector         fixed_size_list<float32>[dim]
    text           string
    source         string
    page           int32, nullable
    start, end     int64              offsets into the document text (its sections in order)
    chunk_index    int32
    section_index  int32, nullable    index of the chunk's first section; null reads as 0
    headings       list<string>
    metadata       JSON text: Arrow's ``arrow.json`` extension in LanceDB (kept as JSONB there,
                   which lets ``metadata.<key>`` filters run in the query engine), plain string
                   in the sinks
    model          string
    deleted        bool, sinks only (a tombstone row: the sinks are append-only logs)

``section_index`` came later than the other columns: files and tables written before it lack it,
and reading them gives 0. A LanceDB writer adds it, all null, to such a table when it opens it
(``_lance_db``); a sink's new part files have it, its old ones keep their layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._vectors import embedding_problems
from ..types import Embedding, Hit, Record
from ._common import last_wins

# Columns a search returns; the vector itself is never materialised for a hit.
HIT_COLUMNS = [
    "id",
    "text",
    "source",
    "page",
    "start",
    "end",
    "chunk_index",
    "section_index",
    "headings",
    "metadata",
]

# Added after the first release: a table written before it lacks the column (see the layout).
SECTION_INDEX = "section_index"
SECTION_INDEX_FIELD = pa.field(SECTION_INDEX, pa.int32())


def record_schema(dim: int, *, json_metadata: bool = True, tombstones: bool = False) -> pa.Schema:
    """The Arrow schema of records holding ``dim``-dimensional vectors.

    ``json_metadata`` types the metadata column as Arrow JSON (LanceDB) rather than a string;
    ``tombstones`` adds the sinks' ``deleted`` column.
    """
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("text", pa.string()),
        pa.field("source", pa.string()),
        pa.field("page", pa.int32()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("chunk_index", pa.int32()),
        SECTION_INDEX_FIELD,
        pa.field("headings", pa.list_(pa.string())),
        pa.field("metadata", pa.json_() if json_metadata else pa.string()),
        pa.field("model", pa.string()),
    ]
    if tombstones:
        fields.append(pa.field("deleted", pa.bool_()))
    return pa.schema(fields)


def table_schema(dim: int) -> pa.Schema:
    """The schema of a LanceDB collection of ``dim``-dimensional vectors."""
    return record_schema(dim)


def sink_schema(dim: int) -> pa.Schema:
    """The Parquet schema of a sink of ``dim``-dimensional vectors."""
    return record_schema(dim, json_metadata=False, tombstones=True)


def metadata_json(record: Record) -> str:
    # default=str: a date or a Path in parser metadata is kept as its text rather than refused.
    return json.dumps(dict(record.metadata), ensure_ascii=False, default=str)


def vector_problems(
    records: Sequence[Record], dim: int | None, *, nonzero: bool = False
) -> list[str | None]:
    """Per record, why it cannot go into a store of dense ``dim``-dimensional vectors, or ``None``.

    Vectors are held to the one vector rule (``vectorstream._vectors``, as the retrying writer
    holds them), in one pass over the batch. ``nonzero`` also refuses all-zero vectors, whose
    cosine similarity is undefined.
    """
    out: list[str | None] = [
        None
        if r.embedding.kind == "dense"
        else f"this store holds dense embeddings, not {r.embedding.kind}"
        for r in records
    ]
    dense = [i for i, problem in enumerate(out) if problem is None]
    checked = embedding_problems([records[i].embedding for i in dense], dim)
    for i, problem in zip(dense, checked, strict=True):
        if problem is None and nonzero and not np.any(records[i].embedding.as_dense()):
            problem = "vector is all zeros (cosine similarity is undefined)"
        out[i] = problem
    return out


def split_rejected(
    records: Sequence[Record], problems: Sequence[str | None]
) -> tuple[list[Record], dict[str, str]]:
    """The records without a problem, and the others' ids with their reasons."""
    good = [r for r, p in zip(records, problems, strict=True) if p is None]
    rejected = {r.id: p for r, p in zip(records, problems, strict=True) if p is not None}
    return good, rejected


def records_table(
    records: Sequence[Record],
    dim: int,
    *,
    json_metadata: bool = True,
    tombstones: Sequence[tuple[str, str]] = (),
) -> pa.Table:
    """Records (then tombstones, ``(id, source)``) as one Arrow table of ``record_schema``.

    ``tombstones`` makes a sink table (with the ``deleted`` column); without them and with
    ``json_metadata`` it is a LanceDB table. The vectors must already be checked.
    """
    sink = bool(tombstones) or not json_metadata
    schema = record_schema(dim, json_metadata=json_metadata, tombstones=sink)
    vectors = [np.asarray(r.embedding.as_dense(), dtype=np.float32) for r in records]
    flat = np.concatenate(vectors) if vectors else np.zeros(0, np.float32)
    vector = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    pad: list[None] = [None] * len(tombstones)
    if tombstones:
        vector = pa.concat_arrays([vector, pa.nulls(len(tombstones), pa.list_(pa.float32(), dim))])
    columns: dict[str, Any] = {
        "id": [r.id for r in records] + [t[0] for t in tombstones],
        "vector": vector,
        "text": [r.text for r in records] + pad,
        "source": [r.source for r in records] + [t[1] for t in tombstones],
        "page": [r.page for r in records] + pad,
        "start": [r.start for r in records] + pad,
        "end": [r.end for r in records] + pad,
        "chunk_index": [r.chunk_index for r in records] + pad,
        "section_index": [r.section_index for r in records] + pad,
        "headings": [list(r.headings) for r in records] + pad,
        "metadata": [metadata_json(r) for r in records] + pad,
        "model": [r.model for r in records] + pad,
    }
    if sink:
        columns["deleted"] = [False] * len(records) + [True] * len(tombstones)
    arrays = [
        value if isinstance(value, pa.Array) else pa.array(value, field.type)
        for field, value in zip(schema, columns.values(), strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def records_to_arrow(
    records: Sequence[Record], dim: int, *, nonzero: bool = True
) -> tuple[pa.Table, dict[str, str]]:
    """Checked records (the last one per id) as a LanceDB table, with the rejected ids' reasons."""
    good, rejected = split_rejected(records, vector_problems(records, dim, nonzero=nonzero))
    return records_table(last_wins(good), dim), rejected


def record_dict(record: Record) -> dict[str, Any]:
    """A record as one JSON-ready row of the same columns (a JSON Lines sink's line)."""
    return {
        "id": record.id,
        "vector": np.asarray(record.embedding.as_dense(), dtype=np.float32).tolist(),
        "text": record.text,
        "source": record.source,
        "page": record.page,
        "start": record.start,
        "end": record.end,
        "chunk_index": record.chunk_index,
        "section_index": record.section_index,
        "headings": list(record.headings),
        "metadata": metadata_json(record),
        "model": record.model,
    }


def record_from_row(row: Mapping[str, Any]) -> Record:
    """The record a stored row holds (the inverse of ``records_table`` / ``record_dict``)."""
    return Record(
        id=row["id"],
        embedding=Embedding(dense=np.asarray(row["vector"], dtype=np.float32)),
        text=row.get("text") or "",
        source=row.get("source") or "",
        chunk_index=int(row.get("chunk_index") or 0),
        start=int(row.get("start") or 0),
        end=int(row.get("end") or 0),
        model=row.get("model") or "",
        page=row.get("page"),
        headings=tuple(row.get("headings") or ()),
        metadata=json.loads(row["metadata"]) if row.get("metadata") else {},
        # Absent (older files and tables) or null: the first section.
        section_index=int(row.get("section_index") or 0),
    )


def hit_from_row(row: Mapping[str, Any], score: float) -> Hit:
    """A search hit from a row of the ``HIT_COLUMNS`` (``section_index`` may be missing: 0)."""
    raw_meta = row["metadata"]
    return Hit(
        id=row["id"],
        score=score,
        text=row["text"] or "",
        source=row["source"] or "",
        chunk_index=row["chunk_index"] or 0,
        start=row["start"] or 0,
        end=row["end"] or 0,
        page=row["page"],
        headings=tuple(row["headings"] or ()),
        metadata=json.loads(raw_meta) if raw_meta else {},
        section_index=row.get("section_index") or 0,
    )


def hit_columns(names: Sequence[str]) -> list[str]:
    """The ``HIT_COLUMNS`` a table with columns ``names`` has (an older one lacks some)."""
    present = set(names)
    return [name for name in HIT_COLUMNS if name in present]


def hits_from_arrow(table: pa.Table) -> list[Hit]:
    """Hits from a LanceDB answer: the ``HIT_COLUMNS`` (those the table has) and ``_distance``."""
    cols = {name: table.column(name).to_pylist() for name in hit_columns(table.column_names)}
    distances = table.column("_distance").to_pylist()
    return [
        hit_from_row({name: values[i] for name, values in cols.items()}, 1.0 - float(d))
        for i, d in enumerate(distances)
    ]


__all__ = [
    "HIT_COLUMNS",
    "SECTION_INDEX",
    "SECTION_INDEX_FIELD",
    "hit_columns",
    "hit_from_row",
    "hits_from_arrow",
    "metadata_json",
    "record_dict",
    "record_from_row",
    "record_schema",
    "records_table",
    "records_to_arrow",
    "sink_schema",
    "split_rejected",
    "table_schema",
    "vector_problems",
]
