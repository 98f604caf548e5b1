"""The record layout of the embedded stores: one Arrow schema and its serialisation.

LanceDB (a table per collection) and the file sinks (Parquet, JSON Lines) keep a record as the
same columns under the same names, so a file written by a sink loads into a LanceDB table as is::

    id             string, not null   deterministic record id (merge key of upserts)
    vector         by the collection's kind (see below)
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

The ``vector`` column holds the collection's kind of embedding:

    dense          fixed_size_list<float32>[dim]
    multivector    list<fixed_size_list<float32>[dim]>        one row per token (LanceDB's
                   multivector layout, which it searches with MaxSim)
    sparse         struct<indices: list<int32>, values: list<float32>, dim: int32>
                   term ids (sorted), their weights, and the vocabulary size

A schema written here also names its kind and width in its metadata (``vectorstream.kind``,
``vectorstream.dim``): an empty sparse table has no row to read the vocabulary size from.
Tables and files made before kinds existed have no such metadata; their fixed-size ``vector``
says dense.

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
from ..errors import RecordRejectedError, StoreError
from ..types import Embedding, EmbeddingKind, Hit, Record, SparseVector
from ._common import last_wins
from ._kinds import DIM_KEY, KIND_KEY

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


SPARSE_TYPE = pa.struct(
    [
        pa.field("indices", pa.list_(pa.int32())),
        pa.field("values", pa.list_(pa.float32())),
        pa.field("dim", pa.int32()),
    ]
)


def vector_type(kind: EmbeddingKind, dim: int) -> pa.DataType:
    """The Arrow type of the ``vector`` column of a collection of ``kind`` (see the layout)."""
    if kind == "sparse":
        return SPARSE_TYPE
    if kind == "multivector":
        return pa.list_(pa.list_(pa.float32(), dim))
    return pa.list_(pa.float32(), dim)


def schema_kind(schema: pa.Schema, what: str) -> tuple[EmbeddingKind, int]:
    """The kind and width of the records a table or file of ``schema`` holds.

    ``StoreError`` (naming ``what``) when its ``vector`` column is none of the kinds' layouts.
    """
    field = schema.field("vector") if "vector" in schema.names else None
    kind: EmbeddingKind | None = None
    dim: int | None = None
    if field is not None and pa.types.is_fixed_size_list(field.type):
        kind, dim = "dense", field.type.list_size
    elif (
        field is not None
        and pa.types.is_list(field.type)
        and pa.types.is_fixed_size_list(field.type.value_type)
    ):
        kind, dim = "multivector", field.type.value_type.list_size
    elif field is not None and field.type == SPARSE_TYPE:
        raw = (schema.metadata or {}).get(DIM_KEY.encode())
        kind, dim = "sparse", int(raw) if raw and raw.isdigit() else None
    if kind is None or not isinstance(dim, int) or dim <= 0:
        raise StoreError(
            f"{what} has no 'vector' column of a known kind (dense, sparse or multivector); "
            "it was not written by vectorstream"
        )
    return kind, dim


def record_schema(
    dim: int,
    *,
    kind: EmbeddingKind = "dense",
    json_metadata: bool = True,
    tombstones: bool = False,
) -> pa.Schema:
    """The Arrow schema of records holding ``kind`` embeddings of width ``dim``.

    ``json_metadata`` types the metadata column as Arrow JSON (LanceDB) rather than a string;
    ``tombstones`` adds the sinks' ``deleted`` column.
    """
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", vector_type(kind, dim)),
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
    return pa.schema(fields, metadata={KIND_KEY: kind, DIM_KEY: str(dim)})


def table_schema(dim: int, kind: EmbeddingKind = "dense") -> pa.Schema:
    """The schema of a LanceDB collection of ``kind`` embeddings of width ``dim``."""
    return record_schema(dim, kind=kind)


def sink_schema(dim: int, kind: EmbeddingKind = "dense") -> pa.Schema:
    """The Parquet schema of a sink of ``kind`` embeddings of width ``dim``."""
    return record_schema(dim, kind=kind, json_metadata=False, tombstones=True)


def metadata_json(record: Record) -> str:
    # default=str: a date or a Path in parser metadata is kept as its text rather than refused.
    return json.dumps(dict(record.metadata), ensure_ascii=False, default=str)


def vector_problems(
    records: Sequence[Record],
    dim: int | None,
    *,
    kind: EmbeddingKind = "dense",
    nonzero: bool = False,
) -> list[str | None]:
    """Per record, why it cannot go into a collection of ``kind`` embeddings of width ``dim``,
    or ``None``.

    Embeddings are held to the one vector rule (``vectorstream._vectors``, as the retrying writer
    holds them), in one pass over the batch. ``nonzero`` also refuses all-zero dense vectors and
    multivector rows, whose cosine similarity is undefined.
    """
    out: list[str | None] = [
        None
        if r.embedding.kind == kind
        else f"this collection holds {kind} embeddings, not {r.embedding.kind}"
        for r in records
    ]
    same = [i for i, problem in enumerate(out) if problem is None]
    checked = embedding_problems([records[i].embedding for i in same], dim)
    for i, problem in zip(same, checked, strict=True):
        if problem is None and nonzero:
            problem = _zero_problem(records[i].embedding)
        out[i] = problem
    return out


def kind_problems(
    records: Sequence[Record], dim: int | None, kind: EmbeddingKind, *, nonzero: bool = False
) -> list[str | None]:
    """``vector_problems`` for a server store: a dense collection's records are checked for
    their kind only (the database checks dense vectors itself), the other kinds' fully."""
    if kind == "dense":
        return [
            None
            if r.embedding.kind == "dense"
            else f"this collection holds dense embeddings, not {r.embedding.kind}"
            for r in records
        ]
    return vector_problems(records, dim, kind=kind, nonzero=nonzero)


def rejected_error(rejected: Mapping[str, str], total: int, target: str) -> RecordRejectedError:
    """The error an upsert raises after writing the rest: the set-aside ids with reasons."""
    return RecordRejectedError(
        f"{len(rejected)} of {total} records were rejected by {target}", dict(rejected)
    )


def _zero_problem(embedding: Embedding) -> str | None:
    if embedding.dense is not None and not np.any(embedding.dense):
        return "vector is all zeros (cosine similarity is undefined)"
    if embedding.multivector is not None and not np.all(np.any(embedding.multivector, axis=1)):
        return "multivector has an all-zero row (cosine similarity is undefined)"
    return None


def split_rejected(
    records: Sequence[Record], problems: Sequence[str | None]
) -> tuple[list[Record], dict[str, str]]:
    """The records without a problem, and the others' ids with their reasons."""
    good = [r for r, p in zip(records, problems, strict=True) if p is None]
    rejected = {r.id: p for r, p in zip(records, problems, strict=True) if p is not None}
    return good, rejected


def _offsets(lengths: Sequence[int], nulls: int) -> pa.Array:
    """List offsets for ``lengths`` followed by ``nulls`` empty entries."""
    ends = np.cumsum([0, *lengths, *([0] * nulls)], dtype=np.int64)
    return pa.array(ends.astype(np.int32), pa.int32())


def _mask(n: int, nulls: int) -> pa.Array | None:
    return pa.array([False] * n + [True] * nulls, pa.bool_()) if nulls else None


def vector_array(records: Sequence[Record], dim: int, kind: EmbeddingKind, nulls: int) -> pa.Array:
    """The ``vector`` column of ``records`` (checked, of ``kind``), then ``nulls`` null rows."""
    n = len(records)
    if kind == "sparse":
        sparse = [r.embedding.sparse for r in records]
        lengths = [0 if sv is None else int(sv.indices.size) for sv in sparse]
        parts = [sv for sv in sparse if sv is not None]
        idx = np.concatenate([sv.indices for sv in parts]) if parts else np.zeros(0)
        val = np.concatenate([sv.values for sv in parts]) if parts else np.zeros(0)
        offsets = _offsets(lengths, nulls)
        return pa.StructArray.from_arrays(
            [
                pa.ListArray.from_arrays(offsets, pa.array(idx.astype(np.int32), pa.int32())),
                pa.ListArray.from_arrays(offsets, pa.array(val.astype(np.float32), pa.float32())),
                pa.array([dim] * (n + nulls), pa.int32()),
            ],
            fields=list(SPARSE_TYPE),
            mask=_mask(n, nulls),
        )
    if kind == "multivector":
        rows = [np.asarray(r.embedding.multivector, dtype=np.float32) for r in records]
        flat = np.concatenate([m.reshape(-1) for m in rows]) if rows else np.zeros(0)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        offsets = _offsets([m.shape[0] for m in rows], nulls)
        return pa.ListArray.from_arrays(offsets, inner, mask=_mask(n, nulls))
    vectors = [np.asarray(r.embedding.as_dense(), dtype=np.float32) for r in records]
    flat = np.concatenate(vectors) if vectors else np.zeros(0, np.float32)
    vector = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    if nulls:
        vector = pa.concat_arrays([vector, pa.nulls(nulls, pa.list_(pa.float32(), dim))])
    return vector


def records_table(
    records: Sequence[Record],
    dim: int,
    *,
    kind: EmbeddingKind = "dense",
    json_metadata: bool = True,
    tombstones: Sequence[tuple[str, str]] = (),
) -> pa.Table:
    """Records (then tombstones, ``(id, source)``) as one Arrow table of ``record_schema``.

    ``tombstones`` makes a sink table (with the ``deleted`` column); without them and with
    ``json_metadata`` it is a LanceDB table. The embeddings must already be checked.
    """
    sink = bool(tombstones) or not json_metadata
    schema = record_schema(dim, kind=kind, json_metadata=json_metadata, tombstones=sink)
    vector = vector_array(records, dim, kind, len(tombstones))
    pad: list[None] = [None] * len(tombstones)
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
    records: Sequence[Record], dim: int, *, kind: EmbeddingKind = "dense", nonzero: bool = True
) -> tuple[pa.Table, dict[str, str]]:
    """Checked records (the last one per id) as a LanceDB table, with the rejected ids' reasons."""
    problems = vector_problems(records, dim, kind=kind, nonzero=nonzero)
    good, rejected = split_rejected(records, problems)
    return records_table(last_wins(good), dim, kind=kind), rejected


def vector_value(embedding: Embedding) -> Any:
    """An embedding as the JSON value of the ``vector`` column (a JSON Lines line)."""
    if embedding.sparse is not None:
        sv = embedding.sparse
        return {"indices": sv.indices.tolist(), "values": sv.values.tolist(), "dim": sv.dim}
    if embedding.multivector is not None:
        return np.asarray(embedding.multivector, dtype=np.float32).tolist()
    return np.asarray(embedding.as_dense(), dtype=np.float32).tolist()


def embedding_of(value: Any) -> Embedding:
    """The embedding a stored ``vector`` value holds (the inverse of ``vector_value``; also
    reads Arrow's Python values of the three layouts)."""
    if isinstance(value, Mapping):
        return Embedding(sparse=SparseVector(value["indices"], value["values"], int(value["dim"])))
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 2:
        return Embedding(multivector=array)
    return Embedding(dense=array)


def record_dict(record: Record) -> dict[str, Any]:
    """A record as one JSON-ready row of the same columns (a JSON Lines sink's line)."""
    return {
        "id": record.id,
        "vector": vector_value(record.embedding),
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
        embedding=embedding_of(row["vector"]),
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


def hits_from_arrow(table: pa.Table, base: float = 1.0) -> list[Hit]:
    """Hits from a LanceDB answer: the ``HIT_COLUMNS`` (those the table has) and ``_distance``.

    LanceDB's cosine distance is ``1 - cosine``, and for a multivector query of ``n`` rows
    ``n - MaxSim``: ``base`` is 1 or ``n``, and the score is ``base - distance``.
    """
    cols = {name: table.column(name).to_pylist() for name in hit_columns(table.column_names)}
    distances = table.column("_distance").to_pylist()
    return [
        hit_from_row({name: values[i] for name, values in cols.items()}, base - float(d))
        for i, d in enumerate(distances)
    ]


__all__ = [
    "HIT_COLUMNS",
    "SECTION_INDEX",
    "SECTION_INDEX_FIELD",
    "SPARSE_TYPE",
    "embedding_of",
    "hit_columns",
    "hit_from_row",
    "hits_from_arrow",
    "kind_problems",
    "metadata_json",
    "record_dict",
    "record_from_row",
    "record_schema",
    "records_table",
    "records_to_arrow",
    "rejected_error",
    "schema_kind",
    "sink_schema",
    "split_rejected",
    "table_schema",
    "vector_array",
    "vector_problems",
    "vector_type",
    "vector_value",
]
