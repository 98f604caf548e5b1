"""The resume manifest: what each source produced, under which settings.

One SQLite file per (store, collection). A source's row is written only *after* all of its records
are durably in the store and its stale records are gone, so a run killed at any moment leaves the
manifest describing only finished work; the next run redoes whatever is not recorded as finished.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    uri TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    content_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    uri: str
    size: int | None
    mtime_ns: int | None
    content_hash: str
    settings: str
    chunks: int


class Manifest:
    """A thread-safe handle on the manifest file (one connection, serialised by a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the manifest {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def get(self, uri: str) -> ManifestEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT uri, size, mtime_ns, content_hash, settings, chunks FROM sources WHERE uri=?",
                (uri,),
            ).fetchone()
        return ManifestEntry(*row) if row else None

    def put(self, entry: ManifestEntry) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.uri,
                    entry.size,
                    entry.mtime_ns,
                    entry.content_hash,
                    entry.settings,
                    entry.chunks,
                    time.time(),
                ),
            )

    def remove(self, uri: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sources WHERE uri=?", (uri,))

    def uris(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT uri FROM sources ORDER BY uri").fetchall()
        for (uri,) in rows:
            yield uri

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM sources").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
