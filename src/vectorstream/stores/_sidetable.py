"""Side tables kept in a file beside the data: SQLite (file sinks, tests) and in memory.

Adapters of real databases keep their side tables in the database itself; these two are for the
stores that are plain files (Parquet, JSONL) and for fakes at the ``VectorStore`` seam.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import StoreError
from .base import Doc

_SQLITE_CHUNK = 500  # keys per statement: far below SQLite's bound on host parameters


class SQLiteSideTable:
    """A side table in one SQLite file (WAL, one connection serialised by a lock)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, doc TEXT)")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the side table {self.path}: {exc}") from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        keys = list(keys)
        with self._lock:
            for i in range(0, len(keys), _SQLITE_CHUNK):
                part = keys[i : i + _SQLITE_CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._run(f"SELECT key, doc FROM docs WHERE key IN ({marks})", part)
                out.update((k, json.loads(d)) for k, d in rows)
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        rows = [(k, json.dumps(d)) for k, d in docs.items()]
        if rows:
            with self._lock:
                self._write("INSERT OR REPLACE INTO docs VALUES (?, ?)", rows)

    def delete_many(self, keys: Sequence[str]) -> None:
        rows = [(k,) for k in keys]
        if rows:
            with self._lock:
                self._write("DELETE FROM docs WHERE key=?", rows)

    def scan(self) -> Iterator[tuple[str, Doc]]:
        with self._lock:
            rows = self._run("SELECT key, doc FROM docs ORDER BY key", [])
        for key, doc in rows:
            yield key, json.loads(doc)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: Sequence[str]) -> list[tuple[str, str]]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # a read-only handle on a file nobody has written yet
            raise StoreError(f"side table {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"side table {self.path}: {exc}") from exc

    def _write(self, sql: str, rows: Sequence[tuple[str, ...]]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the side table {self.path}: {exc}") from exc


class MemorySideTable:
    """A side table in a dict: for in-memory stores and test fakes."""

    def __init__(self) -> None:
        self._docs: dict[str, str] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        with self._lock:
            return {k: json.loads(self._docs[k]) for k in keys if k in self._docs}

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        encoded = {k: json.dumps(d) for k, d in docs.items()}  # JSON, as a database would keep it
        with self._lock:
            self._docs.update(encoded)

    def delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for k in keys:
                self._docs.pop(k, None)

    def scan(self) -> Iterator[tuple[str, Doc]]:
        with self._lock:
            items = sorted(self._docs.items())
        for key, doc in items:
            yield key, json.loads(doc)


__all__ = ["MemorySideTable", "SQLiteSideTable"]
