"""Write-only file sinks: Parquet (``parquet:PATH``) and JSON Lines (``jsonl:PATH``).

A sink is an append-only log of records, streamed to disk batch by batch (memory is bounded by
the batch, never by the corpus):

* ``upsert`` appends the records. IDs are deterministic, so a re-run appends rows with the same
  ids; a reader replays the log and keeps the **last row per id**.
* ``delete`` appends *tombstones* (``deleted = true``) for the ids it removes; a reader drops an
  id whose last row is a tombstone. ``records()`` replays the log this way.
* ``search`` / ``range_search`` raise ``StoreError``: load the files into a store to search.

Where the files go:

* ``parquet:out/`` → ``out/<collection>/part-00000.parquet``, ``part-00001.parquet``, …: one part
  per :meth:`ParquetSink.flush` or ``rows_per_file`` rows, written as ``.tmp`` and renamed when
  complete, so a reader never sees a half-written file and a killed run leaves whole parts.
* ``parquet:out/file.parquet`` → that one file (written on ``close``; the collection is ignored).
* ``jsonl:out/`` → ``out/<collection>.jsonl``; ``jsonl:out/file.jsonl`` → that file. Each upsert
  is written and flushed before it returns; ``flush``/``close`` also ``fsync``.

Columns/keys are those of the LanceDB table (id, vector, text, source, page, start, end,
chunk_index, headings, metadata as a JSON string, model) plus ``deleted`` (bool).
A writer lock (``<file or folder>.lock``) keeps a second writer out.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, RecordRejectedError, StoreError
from ..types import Embedding, Hit, Record
from ._flock import WriterLock
from .base import StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.files")


def _strip_scheme(uri: str, scheme: str) -> Path:
    raw = uri
    for prefix in (f"{scheme}://", f"{scheme}:"):
        if raw.lower().startswith(prefix):
            raw = raw[len(prefix) :]
            break
    if not raw:
        raise ConfigError(f"{uri!r} names no path; use {scheme}:PATH")
    return Path(raw).expanduser()


def sink_schema(dim: int) -> pa.Schema:
    """The Parquet schema of a sink of ``dim``-dimensional vectors."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("text", pa.string()),
            pa.field("source", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("chunk_index", pa.int32()),
            pa.field("headings", pa.list_(pa.string())),
            pa.field("metadata", pa.string()),
            pa.field("model", pa.string()),
            pa.field("deleted", pa.bool_()),
        ]
    )


def _check_vector(record: Record, dim: int | None) -> str | None:
    vector = np.asarray(record.embedding.as_dense())
    if vector.ndim != 1 or (dim is not None and vector.shape[0] != dim):
        return f"vector has shape {tuple(vector.shape)}, the sink holds {dim} dimensions"
    if not np.all(np.isfinite(vector)):
        return "vector contains NaN or infinity"
    return None


def _metadata_json(record: Record) -> str:
    # default=str: a date or a Path in parser metadata is kept as its text rather than refused.
    return json.dumps(dict(record.metadata), ensure_ascii=False, default=str)


# What replaying the log for ids needs (not the vectors, not the texts).
_LOG_COLUMNS = ("id", "source", "deleted")


class _FileSink(ABC):
    """What both sinks share: the log semantics, the lock, replay and refusing to search."""

    kind: ClassVar[str] = "file"
    capabilities = StoreCapabilities(filters=False, range_search=False)

    def __init__(
        self, uri: str, collection: str, target: Path, dim: int | None, read_only: bool
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.target = target
        self.dim = dim
        self.read_only = read_only
        self._lock = WriterLock(
            target.with_name(target.name + ".lock"), f"the {self.kind} sink {target}"
        )
        if not read_only:
            self._lock.acquire()
        self._closed = False

    # -- the log -----------------------------------------------------------------------------

    @abstractmethod
    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        """Write records and tombstones (id, source) to the end of the log."""

    @abstractmethod
    def _replay(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row written so far, in write order (``columns``: at least these keys)."""

    def upsert(self, records: Sequence[Record]) -> None:
        """Append ``records`` (readers keep the last row per id). Bad vectors are set aside."""
        self._check_writable()
        rejected: dict[str, str] = {}
        rows: list[Record] = []
        for record in records:
            if self.dim is None:
                self.dim = int(np.asarray(record.embedding.as_dense()).shape[-1])
            problem = _check_vector(record, self.dim)
            if problem:
                rejected[record.id] = problem
            else:
                rows.append(record)
        if rows:
            self._append(rows, [])
        if rejected:
            raise RecordRejectedError(
                f"{len(rejected)} of {len(records)} records were rejected by {self.target}",
                rejected,
            )

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        """Append tombstones for the live ids given (and/or of ``source``); return how many."""
        if ids is None and source is None:
            raise ConfigError("delete() needs ids or source; refusing to delete everything")
        self._check_writable()
        live = self._live()
        wanted = set(ids) if ids is not None else None
        doomed = [
            (rid, src)
            for rid, src in live.items()
            if (wanted is None or rid in wanted) and (source is None or src == source)
        ]
        if doomed:
            self._append([], doomed)
        return len(doomed)

    def _live(self) -> dict[str, str]:
        """id → source of every id whose last row is not a tombstone."""
        live: dict[str, str] = {}
        for row in self._replay(_LOG_COLUMNS):
            if row.get("deleted"):
                live.pop(row["id"], None)
            else:
                live[row["id"]] = row.get("source") or ""
        return live

    def ids(self, source: str | None = None) -> set[str]:
        return {rid for rid, src in self._live().items() if source is None or src == source}

    def count(self) -> int:
        return len(self._live())

    def records(self) -> Iterator[Record]:
        """Replay the log: the last row of each live id, in the order those rows were written."""
        last: dict[str, int] = {}
        for position, row in enumerate(self._replay(_LOG_COLUMNS)):
            if row.get("deleted"):
                last.pop(row["id"], None)
            else:
                last[row["id"]] = position
        keep = set(last.values())
        for position, row in enumerate(self._replay()):
            if position in keep:
                yield _record_from_row(row)

    # -- refused -----------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int = 10, where: Where | None = None) -> list[Hit]:
        raise StoreError(
            f"the {self.kind} sink {self.target} is write-only and cannot be searched; "
            "ingest into a store such as lancedb://PATH to search"
        )

    def range_search(
        self, vector: np.ndarray, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        return self.search(vector)

    # -- lifetime ----------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"the {self.kind} sink {self.target} is closed")
        if self.read_only:
            raise StoreError(f"the {self.kind} sink {self.target} was opened read-only (mode='r')")

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far complete on disk."""

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._lock.release()

    def __enter__(self) -> _FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_from_row(row: dict[str, Any]) -> Record:
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
    )


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


class ParquetSink(_FileSink):
    """Records streamed into Parquet: a folder of part files, or one file."""

    kind = "parquet"

    def __init__(
        self,
        uri: str,
        collection: str,
        target: Path,
        dim: int | None,
        *,
        read_only: bool,
        single_file: bool,
        rows_per_file: int,
        compression: str,
    ) -> None:
        self.single_file = single_file
        self.rows_per_file = rows_per_file
        self.compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows_in_part = 0
        self._next_part = 0
        super().__init__(uri, collection, target, dim, read_only)
        if read_only:
            return
        try:
            self._prepare()
        except BaseException:
            self._lock.release()
            raise

    def _prepare(self) -> None:
        if self.single_file:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            if self.target.exists():
                raise StoreError(
                    f"{self.target} exists; a single-file parquet sink writes a new file "
                    "(use a folder, parquet:DIR/, to append parts)"
                )
            return
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            for tmp in self.target.glob("part-*.parquet.tmp"):
                tmp.unlink()  # the unfinished part of a run that was killed
        except OSError as exc:
            raise StoreError(f"cannot prepare {self.target} for writing: {exc}") from exc
        numbers = [int(p.stem.split("-")[1]) for p in self._parts()]
        self._next_part = max(numbers, default=-1) + 1

    @classmethod
    def open(
        cls,
        uri: str,
        collection: str = "documents",
        *,
        dim: int | None = None,
        mode: str | None = None,
        rows_per_file: int = 100_000,
        compression: str = "zstd",
        **unknown: Any,
    ) -> ParquetSink:
        """Open a Parquet sink. ``rows_per_file`` rolls a folder sink over to a new part.

        ``mode="r"`` opens it to read back (``records``, ``ids``) without the writer lock.
        """
        if unknown:
            raise ConfigError(
                f"unknown parquet options {sorted(unknown)}; known: compression, mode, "
                "rows_per_file"
            )
        _check_mode(mode)
        if rows_per_file <= 0:
            raise ConfigError(f"rows_per_file must be positive, got {rows_per_file}")
        path = _strip_scheme(uri, "parquet")
        single = path.suffix.lower() == ".parquet"
        target = path if single else path / collection
        return cls(
            uri,
            collection,
            target,
            dim,
            read_only=mode == "r",
            single_file=single,
            rows_per_file=rows_per_file,
            compression=compression,
        )

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.target.glob("part-*.parquet") if p.stem[5:].isdigit())

    def _table(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> pa.Table:
        dim = self.dim or 0
        vectors = [np.asarray(r.embedding.as_dense(), dtype=np.float32) for r in rows]
        flat = np.concatenate(vectors) if vectors else np.zeros(0, np.float32)
        vector_array = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
        if tombstones:
            nulls = pa.nulls(len(tombstones), pa.list_(pa.float32(), dim))
            vector_array = pa.concat_arrays([vector_array, nulls])
        pad: list[None] = [None] * len(tombstones)
        return pa.table(
            {
                "id": [r.id for r in rows] + [t[0] for t in tombstones],
                "vector": vector_array,
                "text": [r.text for r in rows] + pad,
                "source": [r.source for r in rows] + [t[1] for t in tombstones],
                "page": pa.array([r.page for r in rows] + pad, pa.int32()),
                "start": pa.array([r.start for r in rows] + pad, pa.int64()),
                "end": pa.array([r.end for r in rows] + pad, pa.int64()),
                "chunk_index": pa.array([r.chunk_index for r in rows] + pad, pa.int32()),
                "headings": pa.array([list(r.headings) for r in rows] + pad, pa.list_(pa.string())),
                "metadata": [_metadata_json(r) for r in rows] + pad,
                "model": [r.model for r in rows] + pad,
                "deleted": [False] * len(rows) + [True] * len(tombstones),
            },
            schema=sink_schema(dim),
        )

    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        if self.dim is None:
            raise StoreError(f"the parquet sink {self.target} needs dim before it can write")
        table = self._table(rows, tombstones)
        try:
            if self._writer is None:
                self._tmp = (
                    self.target.with_name(self.target.name + ".tmp")
                    if self.single_file
                    else self.target / f"part-{self._next_part:05d}.parquet.tmp"
                )
                self._writer = pq.ParquetWriter(
                    self._tmp, sink_schema(self.dim), compression=self.compression
                )
            self._writer.write_table(table)  # one row group per batch: streamed, not held
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot write parquet to {self.target}: {exc}") from exc
        self._rows_in_part += table.num_rows
        if not self.single_file and self._rows_in_part >= self.rows_per_file:
            self._finish_part()

    def _finish_part(self) -> None:
        if self._writer is None or self._tmp is None:
            return
        writer, tmp = self._writer, self._tmp
        self._writer, self._tmp = None, None
        try:
            writer.close()
            final = self.target if self.single_file else tmp.with_suffix("")
            os.replace(tmp, final)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot finish the parquet file {tmp}: {exc}") from exc
        log.debug("wrote %s (%d rows)", final, self._rows_in_part)
        self._rows_in_part = 0
        self._next_part += 1

    def flush(self) -> None:
        """Complete the open part file (a folder sink's next upsert starts a new part).

        A single-file sink completes its file only on ``close``: Parquet has one footer.
        """
        if not self.single_file:
            self._finish_part()

    def close(self) -> None:
        if not self._closed:
            try:
                self._finish_part()
            finally:
                super().close()

    def _replay(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        if self._writer is not None:
            if self.single_file:
                raise StoreError(
                    f"the single-file parquet sink {self.target} cannot be read before close(); "
                    "use a folder (parquet:DIR/) to read back while writing"
                )
            self._finish_part()  # the rows written so far become a complete part
        files: Iterable[Path] = (
            ([self.target] if self.target.exists() else []) if self.single_file else self._parts()
        )
        for path in files:
            try:
                parquet = pq.ParquetFile(path)
                # Columnar: listing ids reads three columns, not the vectors and texts.
                names = list(columns) if columns is not None else None
                for batch in parquet.iter_batches(batch_size=4096, columns=names):
                    yield from batch.to_pylist()
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# JSON Lines
# ---------------------------------------------------------------------------------------------


class JSONLSink(_FileSink):
    """Records appended to a JSON Lines file, one object per line."""

    kind = "jsonl"

    def __init__(
        self, uri: str, collection: str, target: Path, dim: int | None, read_only: bool
    ) -> None:
        super().__init__(uri, collection, target, dim, read_only)
        self._fh: TextIO | None = None
        if read_only:
            return
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            _drop_torn_tail(self.target)
            self._fh = self.target.open("a", encoding="utf-8")
        except OSError as exc:
            self._lock.release()
            raise StoreError(f"cannot open {self.target} for writing: {exc}") from exc

    @classmethod
    def open(
        cls,
        uri: str,
        collection: str = "documents",
        *,
        dim: int | None = None,
        mode: str | None = None,
        **unknown: Any,
    ) -> JSONLSink:
        """Open a JSONL sink; ``mode="r"`` reads it back without the writer lock."""
        if unknown:
            raise ConfigError(f"unknown jsonl options {sorted(unknown)}; known: mode")
        _check_mode(mode)
        path = _strip_scheme(uri, "jsonl")
        target = (
            path if path.suffix.lower() in (".jsonl", ".ndjson") else path / f"{collection}.jsonl"
        )
        return cls(uri, collection, target, dim, mode == "r")

    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        lines = [
            json.dumps(
                {
                    "id": r.id,
                    "vector": np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist(),
                    "text": r.text,
                    "source": r.source,
                    "page": r.page,
                    "start": r.start,
                    "end": r.end,
                    "chunk_index": r.chunk_index,
                    "headings": list(r.headings),
                    "metadata": _metadata_json(r),
                    "model": r.model,
                    "deleted": False,
                },
                ensure_ascii=False,
            )
            for r in rows
        ]
        lines += [
            json.dumps({"id": rid, "source": src, "deleted": True}, ensure_ascii=False)
            for rid, src in tombstones
        ]
        if self._fh is None:  # only a read-only sink has no handle, and it never gets here
            raise StoreError(f"the jsonl sink {self.target} is not open for writing")
        try:
            # One write of whole lines, then flush: a killed run leaves at most one torn last
            # line, which _replay skips.
            self._fh.write("".join(line + "\n" for line in lines))
            self._fh.flush()
        except OSError as exc:
            raise StoreError(f"cannot write to {self.target}: {exc}") from exc

    def flush(self) -> None:
        if self._closed or self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise StoreError(f"cannot flush {self.target}: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            try:
                super().close()
            finally:
                if self._fh is not None:
                    self._fh.close()

    def _replay(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        if not self.target.exists():
            return
        try:
            with self.target.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.endswith("\n"):
                        log.warning("%s:%d: skipping a torn last line", self.target, number)
                        return
                    if line.strip():
                        yield json.loads(line)
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"cannot read {self.target}: {exc}") from exc


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "r", "w"):
        raise ConfigError(f"mode must be 'r', 'w' or None, got {mode!r}")


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write killed mid-way) before appending."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Walk back in blocks to the last newline; everything after it is the torn line.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            block = fh.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                break
            end = start
        else:
            fh.truncate(0)
    log.warning("%s ended with a torn line (an interrupted write); it was removed", path)


__all__ = ["JSONLSink", "ParquetSink", "sink_schema"]
