"""What the file sinks share: the append-only log, the writer lock, replay, side tables.

A sink is an append-only log of records in the record layout of ``_records``: ``upsert``
appends rows, ``delete`` appends tombstones, and a reader replays the log keeping the last row
per id (see ``stores.files``). Subclasses write and read the log (``_append``, ``_replay``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._vectors import embedding_width
from ..errors import ConfigError, RecordRejectedError, StoreError
from ..types import EmbeddingKind, Hit, Record
from ._common import side_name
from ._flock import WriterLock
from ._kinds import settle_kind
from ._records import record_from_row, split_rejected, vector_problems
from ._sidetable import SQLiteSideTable
from .base import Doc, Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.files")

# What replaying the log for ids needs (not the vectors, not the texts).
_LOG_COLUMNS = ("id", "source", "deleted")


def strip_scheme(uri: str, scheme: str) -> Path:
    """``scheme://PATH`` / ``scheme:PATH`` → ``PATH``."""
    raw = uri
    for prefix in (f"{scheme}://", f"{scheme}:"):
        if raw.lower().startswith(prefix):
            raw = raw[len(prefix) :]
            break
    if not raw:
        raise ConfigError(f"{uri!r} names no path; use {scheme}:PATH")
    return Path(raw).expanduser()


def check_mode(mode: str | None) -> None:
    if mode not in (None, "r", "w"):
        raise ConfigError(f"mode must be 'r', 'w' or None, got {mode!r}")


class FileSink(ABC):
    """The log semantics, the lock, replay, side tables and refusing to search."""

    format: ClassVar[str] = "file"
    # A sink writes every kind, one per sink: its files have one layout (``_records``).
    capabilities = StoreCapabilities(
        kinds=frozenset({"dense", "sparse", "multivector"}), filters=False, range_search=False
    )
    # Whether upserts refuse all-zero vectors: a sink that is searched by cosine (safetensors)
    # must; an export keeps whatever it is given.
    nonzero: ClassVar[bool] = False

    def __init__(
        self,
        uri: str,
        collection: str,
        target: Path,
        dim: int | None,
        read_only: bool,
        kind: EmbeddingKind | None = None,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.target = target
        self.read_only = read_only
        # An existing sink's kind is that of its records; a new one is dense unless told.
        stored = self._stored()
        if stored is not None:
            kind = settle_kind(f"the {self.format} sink {target}", stored[0], kind)
            dim = dim if dim is not None else stored[1]
        self.kind: EmbeddingKind = kind or "dense"
        self.dim = dim
        self._lock = WriterLock(
            target.with_name(target.name + ".lock"), f"the {self.format} sink {target}"
        )
        if not read_only:
            self._lock.acquire()
        self._closed = False
        self._side: dict[str, SQLiteSideTable | _ReadSideTable] = {}

    # -- the log -------------------------------------------------------------------------------

    @abstractmethod
    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        """Write records and tombstones (id, source) to the end of the log."""

    @abstractmethod
    def _replay(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row written so far, in write order (``columns``: at least these keys)."""

    @abstractmethod
    def _stored(self) -> tuple[EmbeddingKind, int] | None:
        """The kind and width of the records already written (``None``: nothing yet)."""

    def upsert(self, records: Sequence[Record]) -> None:
        """Append ``records`` (readers keep the last row per id). Bad vectors are set aside."""
        self._check_writable()
        if self.dim is None:
            # The sink takes the width of its first record of its kind.
            first = next((r for r in records if r.embedding.kind == self.kind), None)
            if first is not None:
                self.dim = embedding_width(first.embedding)
        problems = vector_problems(records, self.dim, kind=self.kind, nonzero=self.nonzero)
        rows, rejected = split_rejected(records, problems)
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

    @property
    def exclusive(self) -> bool:
        """Whether this handle holds the writer lock: nobody else writes while it is open."""
        return not self.read_only and not self._closed

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
                yield record_from_row(row)

    # -- side tables ---------------------------------------------------------------------------

    def side_path(self, name: str) -> Path:
        """Where side table ``name`` lives: a SQLite file beside the output."""
        return self.target.with_name(f"{self.target.name}.vs-{side_name(name)}.sqlite")

    def side_table(self, name: str) -> SideTable:
        """Side table ``name`` (where the pipeline keeps its manifest), beside the output.

        A read-only sink reads it without the writer lock and cannot write to it.
        """
        if self._closed:
            raise StoreError(f"the {self.format} sink {self.target} is closed")
        side = self._side.get(name)
        if side is None:
            path = self.side_path(name)
            side = _ReadSideTable(path) if self.read_only else SQLiteSideTable(path)
            self._side[name] = side
        return side

    # -- refused -------------------------------------------------------------------------------

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        raise StoreError(
            f"the {self.format} sink {self.target} is write-only and cannot be searched; "
            "ingest into a store such as lancedb://PATH to search"
        )

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        return self.search(vector)

    # -- lifetime ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"the {self.format} sink {self.target} is closed")
        if self.read_only:
            raise StoreError(
                f"the {self.format} sink {self.target} was opened read-only (mode='r')"
            )

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
            for side in self._side.values():
                side.close()
            self._side.clear()
            self._lock.release()

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ReadSideTable:
    """A read-only side table: empty until the writer has created its file, then that file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._table: SQLiteSideTable | None = None

    def _open(self) -> SQLiteSideTable | None:
        if self._table is None and self.path.is_file():
            self._table = SQLiteSideTable(self.path, readonly=True)
        return self._table

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        table = self._open()
        return {} if table is None else table.get_many(keys)

    def scan(self) -> Iterator[tuple[str, Doc]]:
        table = self._open()
        if table is not None:
            yield from table.scan()

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        raise StoreError(f"the side table {self.path} was opened read-only (mode='r')")

    def delete_many(self, keys: Sequence[str]) -> None:
        raise StoreError(f"the side table {self.path} was opened read-only (mode='r')")

    def close(self) -> None:
        if self._table is not None:
            self._table.close()


__all__ = ["FileSink", "check_mode", "strip_scheme"]
