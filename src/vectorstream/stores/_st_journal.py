"""A safetensors writer's journal: what was written since the pair was last published.

The published pair is rewritten only when a writer flushes or closes; until then its upserts and
deletes go to two files beside the tensor, flushed after every call, so a killed ingest loses
nothing its manifest says is done (the next writer replays them):

* ``TENSOR.vs-journal.jsonl``: a first line ``{"vectorstream_journal": 1, "dim": D}``, then one
  mapping line per upserted record (``_st_mapping.encode_row``) or a tombstone
  ``{"id", "source", "deleted": true}``;
* ``TENSOR.vs-journal.f32``: the upserted vectors, raw little-endian float32 rows, the ``n``-th
  upsert line's vector being the ``n``-th row.

Vectors are written before their lines, so a kill leaves at most extra vector rows (cut on
replay) and a torn last line (cut as the JSONL sink cuts one).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import StoreError
from ._jsonl import _drop_torn_tail

log = logging.getLogger("vectorstream.stores.safetensors")

_HEADER_KEY = "vectorstream_journal"


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One replayed line: an upsert (``row`` and its vector's index) or a tombstone."""

    id: str
    source: str
    deleted: bool
    row: dict[str, Any] | None  # the raw mapping fields of an upsert
    vector: int  # the row of the vectors file (-1 for a tombstone)
    offset: int  # where the line starts in the lines file, and its length (no newline)
    length: int


class Journal:
    """The two journal files of one tensor path."""

    def __init__(self, tensor: Path) -> None:
        self.lines_path = tensor.with_name(tensor.name + ".vs-journal.jsonl")
        self.vectors_path = tensor.with_name(tensor.name + ".vs-journal.f32")
        self.dim: int | None = None
        self.upserts = 0
        self._size = 0  # bytes in the lines file
        self._lines: BinaryIO | None = None
        self._vectors: BinaryIO | None = None
        self._reader: BinaryIO | None = None

    @property
    def exists(self) -> bool:
        return self.lines_path.exists()

    def stored_dim(self) -> int | None:
        """The width a leftover journal was written with (``None``: no journal)."""
        try:
            with self.lines_path.open("rb") as fh:
                first = fh.readline()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read the journal {self.lines_path}: {exc}") from exc
        return self._header_dim(first)

    def _header_dim(self, first: bytes) -> int | None:
        try:
            header = json.loads(first) if first.endswith(b"\n") else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("dim"), int):
            return None  # a journal killed before its header was complete holds nothing
        return int(header["dim"])

    def replay(self) -> Iterator[JournalLine]:
        """The lines a killed writer left, after cutting its torn tail and extra vectors."""
        if not self.lines_path.exists():
            self._unlink(self.vectors_path)
            return
        _drop_torn_tail(self.lines_path)
        try:
            with self.lines_path.open("rb") as fh:
                first = fh.readline()
                self.dim = self._header_dim(first)
                if self.dim is None:
                    self.discard()
                    return
                offset = len(first)
                for line in fh:
                    body = line[:-1]
                    yield self._parse(body, offset)
                    offset += len(line)
                self._size = offset
        except OSError as exc:
            raise StoreError(f"cannot read the journal {self.lines_path}: {exc}") from exc
        self._cut_vectors()

    def _parse(self, body: bytes, offset: int) -> JournalLine:
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise StoreError(f"the journal {self.lines_path} has a bad line: {exc}") from exc
        if value.get("deleted"):
            return JournalLine(value["id"], value.get("source") or "", True, None, -1, offset, 0)
        self.upserts += 1
        return JournalLine(
            value["id"], value["source"], False, value, self.upserts - 1, offset, len(body)
        )

    def _cut_vectors(self) -> None:
        assert self.dim is not None
        want = self.upserts * self.dim * 4
        try:
            have = self.vectors_path.stat().st_size if self.vectors_path.exists() else 0
            if have < want:
                raise StoreError(
                    f"the journal {self.vectors_path} holds {have // (self.dim * 4)} vectors for "
                    f"{self.upserts} records; remove the two .vs-journal files and ingest again"
                )
            if have > want:
                os.truncate(self.vectors_path, want)  # rows whose lines a kill never wrote
        except OSError as exc:
            raise StoreError(f"cannot repair the journal {self.vectors_path}: {exc}") from exc

    def _open(self, dim: int) -> tuple[BinaryIO, BinaryIO]:
        if self._lines is None or self._vectors is None:
            fresh = not self.lines_path.exists()
            self._lines = self.lines_path.open("ab")
            self._vectors = self.vectors_path.open("ab")
            if fresh:
                self._vectors.truncate(0)  # stray rows of a journal whose lines never began
                header = json.dumps({_HEADER_KEY: 1, "dim": dim}).encode() + b"\n"
                self._lines.write(header)
                self._size = len(header)
                self.dim, self.upserts = dim, 0
        return self._lines, self._vectors

    def append(
        self,
        dim: int,
        rows: Sequence[tuple[bytes, np.ndarray]],
        tombstones: Sequence[tuple[str, str]],
    ) -> list[tuple[int, int, int]]:
        """Append upserts (mapping line, vector of width ``dim``) and tombstones; returns
        ``(vector, offset, length)`` of each upsert line. Both files are flushed on return."""
        lines_fh, vectors_fh = self._open(dim)
        placed: list[tuple[int, int, int]] = []
        chunks: list[bytes] = []
        offset = self._size
        for line, _ in rows:
            placed.append((self.upserts + len(placed), offset, len(line) - 1))
            chunks.append(line)
            offset += len(line)
        for rid, source in tombstones:
            chunks.append(json.dumps({"id": rid, "source": source, "deleted": True}).encode())
            chunks[-1] += b"\n"
            offset += len(chunks[-1])
        try:
            if rows:
                block = np.stack([np.asarray(v, dtype="<f4") for _, v in rows])
                vectors_fh.write(block.tobytes())
                vectors_fh.flush()
            lines_fh.write(b"".join(chunks))
            lines_fh.flush()
        except OSError as exc:
            raise StoreError(f"cannot write the journal {self.lines_path}: {exc}") from exc
        self._size = offset
        self.upserts += len(rows)
        return placed

    def sync(self) -> None:
        """``fsync`` both files (a writer's ``flush`` when it has nothing to publish)."""
        for fh in (self._vectors, self._lines):
            if fh is not None:
                os.fsync(fh.fileno())

    def vectors(self) -> np.ndarray:
        """The journal's vectors, mapped (``(upserts, dim)`` float32)."""
        if not self.upserts or self.dim is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        mapped = np.memmap(self.vectors_path, dtype="<f4", mode="r", shape=(self.upserts, self.dim))
        return mapped.view(np.ndarray)

    def line(self, offset: int, length: int) -> bytes:
        """The upsert line at ``offset`` (no newline)."""
        if self._reader is None:
            self._reader = self.lines_path.open("rb")
        self._reader.seek(offset)
        return self._reader.read(length)

    def close(self) -> None:
        for fh in (self._lines, self._vectors, self._reader):
            if fh is not None:
                fh.close()
        self._lines = self._vectors = self._reader = None

    def discard(self) -> None:
        """Remove the journal (its changes are in the published pair now)."""
        self.close()
        # Lines first: vectors without lines are stray rows the next journal ignores.
        self._unlink(self.lines_path)
        self._unlink(self.vectors_path)
        self.dim, self.upserts, self._size = None, 0, 0

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot remove {path}: {exc}") from exc


__all__ = ["Journal", "JournalLine"]
