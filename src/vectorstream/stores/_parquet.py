"""The Parquet sink (``parquet:PATH``): records streamed into Parquet files.

* ``parquet:out/`` → ``out/<collection>/part-00000.parquet``, ``part-00001.parquet``, …: one part
  per :meth:`ParquetSink.flush` or ``rows_per_file`` rows, written as ``.tmp`` and renamed when
  complete, so a reader never sees a half-written file and a killed run leaves whole parts.
* ``parquet:out/file.parquet`` → that one file (written on ``close``; the collection is ignored).

Columns are ``_records.sink_schema``: the record layout plus ``deleted``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, StoreError
from ..types import EmbeddingKind, Record
from ._filesink import FileSink, check_mode, strip_scheme
from ._kinds import check_kind
from ._records import records_table, schema_kind, sink_schema

log = logging.getLogger("vectorstream.stores.files")


class ParquetSink(FileSink):
    """Records streamed into Parquet: a folder of part files, or one file."""

    format = "parquet"

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
        kind: EmbeddingKind | None = None,
    ) -> None:
        self.single_file = single_file
        self.rows_per_file = rows_per_file
        self.compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows_in_part = 0
        self._next_part = 0
        super().__init__(uri, collection, target, dim, read_only, kind)
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
        kind: str | None = None,
        **unknown: Any,
    ) -> ParquetSink:
        """Open a Parquet sink. ``rows_per_file`` rolls a folder sink over to a new part.

        ``mode="r"`` opens it to read back (``records``, ``ids``) without the writer lock.
        ``kind``: the embedding kind it holds (dense when new and not given; an existing
        folder's kind is read from its parts).
        """
        if unknown:
            raise ConfigError(
                f"unknown parquet options {sorted(unknown)}; known: compression, kind, mode, "
                "rows_per_file"
            )
        check_mode(mode)
        if rows_per_file <= 0:
            raise ConfigError(f"rows_per_file must be positive, got {rows_per_file}")
        path = strip_scheme(uri, "parquet")
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
            kind=None if kind is None else check_kind(kind),
        )

    def _stored(self) -> tuple[EmbeddingKind, int] | None:
        files = ([self.target] if self.target.is_file() else []) if self.single_file else []
        if not self.single_file and self.target.is_dir():
            files = self._parts()
        for path in reversed(files):  # the newest readable part says; a broken one is skipped
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowException):
                log.debug("cannot read the schema of %s", path, exc_info=True)
                continue
            return schema_kind(schema, str(path))
        return None

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.target.glob("part-*.parquet") if p.stem[5:].isdigit())

    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        if self.dim is None:
            raise StoreError(f"the parquet sink {self.target} needs dim before it can write")
        table = records_table(
            rows, self.dim, kind=self.kind, json_metadata=False, tombstones=tombstones
        )
        try:
            if self._writer is None:
                self._tmp = (
                    self.target.with_name(self.target.name + ".tmp")
                    if self.single_file
                    else self.target / f"part-{self._next_part:05d}.parquet.tmp"
                )
                self._writer = pq.ParquetWriter(
                    self._tmp, sink_schema(self.dim, self.kind), compression=self.compression
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


__all__ = ["ParquetSink"]
