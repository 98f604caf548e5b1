"""The mapping file beside a safetensors tensor: one line per tensor row, in the same order.

A mapping written by vectorstream is JSON Lines, one object per row with the record's fields::

    {"id": ..., "text": ..., "source": ..., "page": null, "start": 0, "end": 812,
     "chunk_index": 0, "section_index": 0, "headings": [...], "metadata": {...}, "model": ...}

Files written by other tools are read too:

* JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): an object with a string ``text`` (or a bare
  JSON string); any of the fields above it has are used, other keys go into ``metadata`` (so
  ``where={"metadata.lang": "en"}`` filters on them); blank lines are skipped. A missing ``id`` is
  the row number, a missing ``chunk_index`` too (it keeps the rows' order on a rewrite).
* any other name: one text per line, every line a row (an empty line is an empty text).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from ..errors import StoreError
from ..types import Record
from ._records import HIT_COLUMNS

FIELDS = (*HIT_COLUMNS, "model")  # a hit's fields, and the model that made the row
_FIELD_SET = frozenset(FIELDS)
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")

# The hit columns a loaded mapping keeps in memory (``_records.HIT_COLUMNS`` plus ``model``).
ROWS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("source", pa.string()),
        pa.field("page", pa.int32()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("chunk_index", pa.int32()),
        pa.field("section_index", pa.int32()),
        pa.field("headings", pa.list_(pa.string())),
        pa.field("metadata", pa.string()),  # JSON text, as ``_records.hit_from_row`` reads it
        pa.field("model", pa.string()),
    ]
)


def is_json_lines(path: Path) -> bool:
    return path.suffix.lower() in JSON_SUFFIXES


def _int(value: Any, name: str, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where}: {name} must be an integer, got {value!r}") from exc


def parse_row(raw: bytes, number: int, json_lines: bool, path: Path) -> dict[str, Any]:
    """Row ``number`` (0-based) of a mapping as a dict of ``FIELDS``; ``StoreError`` if unreadable."""
    where = f"{path}:{number + 1}"
    if not json_lines:
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{where}: not UTF-8 text ({exc})") from exc
        return {
            "id": str(number),
            "text": text,
            "source": "",
            "page": None,
            "start": 0,
            "end": len(text),
            "chunk_index": number,
            "section_index": 0,
            "headings": [],
            "metadata": {},
            "model": "",
        }
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{where}: not a JSON line ({exc})") from exc
    if (
        type(value) is dict
        and value.keys() == _FIELD_SET
        and type(value["id"]) is str
        and type(value["metadata"]) is dict
    ):
        return value  # a line as vectorstream writes it: every field there (a load's fast path)
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise StoreError(f"{where}: a mapping line needs a string 'text' field")
    text = value["text"]
    metadata = value.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = {"metadata": metadata}
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    metadata.update((k, v) for k, v in value.items() if k not in FIELDS)
    headings = value.get("headings") or []
    page = value.get("page")
    return {
        "id": str(value.get("id", number)),
        "text": text,
        "source": str(value.get("source") or ""),
        "page": None if page is None else _int(page, "page", where),
        "start": _int(value.get("start", 0), "start", where),
        "end": _int(value.get("end", len(text)), "end", where),
        "chunk_index": _int(value.get("chunk_index", number), "chunk_index", where),
        "section_index": _int(value.get("section_index") or 0, "section_index", where),
        "headings": [str(h) for h in headings] if isinstance(headings, list) else [],
        "metadata": metadata,
        "model": str(value.get("model") or ""),
    }


def encode_row(row: Mapping[str, Any]) -> bytes:
    """A row as the mapping line vectorstream writes (with its newline)."""
    line = json.dumps({k: row[k] for k in FIELDS}, ensure_ascii=False, default=str)
    return line.encode("utf-8") + b"\n"


def record_row(record: Record) -> dict[str, Any]:
    """The mapping row of a record (everything but its vector)."""
    return {
        "id": record.id,
        "text": record.text,
        "source": record.source,
        "page": record.page,
        "start": record.start,
        "end": record.end,
        "chunk_index": record.chunk_index,
        "section_index": record.section_index,
        "headings": list(record.headings),
        "metadata": dict(record.metadata),
        "model": record.model,
    }


def scan(fh: BinaryIO, json_lines: bool, digest: Any = None) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, length, line)`` of each row of the open mapping (the line without its end).

    ``digest`` (a hashlib object) is fed every byte of the file, blank lines included.
    """
    offset = 0
    for line in fh:
        if digest is not None:
            digest.update(line)
        start, offset = offset, offset + len(line)
        body = line[:-1] if line.endswith(b"\n") else line
        if json_lines and not body.strip():
            continue
        yield start, len(body), body


class LoadedMapping:
    """A whole mapping read into columns (what a reader serves hits from), with its digest."""

    def __init__(self, rows: pa.Table, sha256: str) -> None:
        self.rows = rows
        self.sha256 = sha256

    def __len__(self) -> int:
        return int(self.rows.num_rows)

    @classmethod
    def read(cls, path: Path, json_lines: bool) -> LoadedMapping:
        digest = hashlib.sha256()
        columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
        try:
            with path.open("rb") as fh:
                for number, (_, _, raw) in enumerate(scan(fh, json_lines, digest)):
                    row = parse_row(raw, number, json_lines, path)
                    meta = row["metadata"]
                    row["metadata"] = (
                        json.dumps(meta, ensure_ascii=False, default=str) if meta else ""
                    )
                    for name in FIELDS:
                        columns[name].append(row[name])
        except FileNotFoundError as exc:
            raise StoreError(
                f"the mapping file {path} is missing (the texts of the tensor's rows); copy it "
                "beside the tensor, or name it with ?texts=PATH"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot read the mapping file {path}: {exc}") from exc
        try:
            table = pa.Table.from_pydict(columns, schema=ROWS_SCHEMA)
        except (pa.ArrowException, OverflowError) as exc:
            raise StoreError(f"the mapping file {path} has a value out of range: {exc}") from exc
        return cls(table, digest.hexdigest())


__all__ = [
    "FIELDS",
    "JSON_SUFFIXES",
    "ROWS_SCHEMA",
    "LoadedMapping",
    "encode_row",
    "is_json_lines",
    "parse_row",
    "record_row",
    "scan",
]
