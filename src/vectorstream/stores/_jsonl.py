"""The JSON Lines sink (``jsonl:PATH``): records appended to a file, one object per line.

``jsonl:out/`` → ``out/<collection>.jsonl``; ``jsonl:out/file.jsonl`` → that file. Each upsert
is written and flushed before it returns; ``flush``/``close`` also ``fsync``. A line holds the
record layout of ``_records`` (``record_dict``) plus ``deleted``; a tombstone line holds only
``id``, ``source`` and ``deleted``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .._vectors import embedding_width
from ..errors import ConfigError, StoreError
from ..types import EmbeddingKind, Record
from ._filesink import FileSink, check_mode, strip_scheme
from ._kinds import check_kind
from ._records import embedding_of, record_dict

log = logging.getLogger("vectorstream.stores.files")


class JSONLSink(FileSink):
    """Records appended to a JSON Lines file, one object per line."""

    format = "jsonl"

    def __init__(
        self,
        uri: str,
        collection: str,
        target: Path,
        dim: int | None,
        read_only: bool,
        kind: EmbeddingKind | None = None,
    ) -> None:
        super().__init__(uri, collection, target, dim, read_only, kind)
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
        kind: str | None = None,
        **unknown: Any,
    ) -> JSONLSink:
        """Open a JSONL sink; ``mode="r"`` reads it back without the writer lock. ``kind``: the
        embedding kind it holds (dense when new and not given; else read from its lines)."""
        if unknown:
            raise ConfigError(f"unknown jsonl options {sorted(unknown)}; known: kind, mode")
        check_mode(mode)
        path = strip_scheme(uri, "jsonl")
        target = (
            path if path.suffix.lower() in (".jsonl", ".ndjson") else path / f"{collection}.jsonl"
        )
        return cls(
            uri, collection, target, dim, mode == "r", None if kind is None else check_kind(kind)
        )

    def _stored(self) -> tuple[EmbeddingKind, int] | None:
        # The first record line says what the file holds (every line is of the sink's kind).
        for row in self._replay():
            if not row.get("deleted") and row.get("vector") is not None:
                embedding = embedding_of(row["vector"])
                return embedding.kind, embedding_width(embedding)
        return None

    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        lines = [json.dumps({**record_dict(r), "deleted": False}, ensure_ascii=False) for r in rows]
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


__all__ = ["JSONLSink"]
