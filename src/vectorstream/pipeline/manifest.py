"""The resume manifest: what each source produced, under which settings.

One SQLite file per (store, collection). A source's row is written only *after* all of its records
are durably in the store and its stale records are gone, so a run killed at any moment leaves the
manifest describing only finished work; the next run redoes whatever is not recorded as finished.

A second table marks sources as *pending* before their first records are written. Together they
keep an invariant: every record in the store belongs to a source that is either finished or
pending. So a source that is neither cannot have records, and finishing it needs no query for
stale records (which would cost a scan of the store per file).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
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
);
CREATE TABLE IF NOT EXISTS pending (uri TEXT PRIMARY KEY)
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
            self._db.executescript(_SCHEMA)
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
        """Record a finished source (and clear its pending mark) in one transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
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
            self._db.execute("DELETE FROM pending WHERE uri=?", (entry.uri,))

    def mark_pending(self, uris: Iterable[str]) -> None:
        """Mark sources whose records are about to be written (before the write)."""
        rows = [(u,) for u in uris]
        if rows:
            with self._lock, self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?)", rows)

    def is_pending(self, uri: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM pending WHERE uri=?", (uri,)).fetchone()
        return row is not None

    def remove(self, uri: str) -> None:
        """Forget a source entirely (its records must already be gone)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM sources WHERE uri=?", (uri,))
            self._db.execute("DELETE FROM pending WHERE uri=?", (uri,))

    def uris(self) -> Iterator[str]:
        """Every source that may have records: finished or pending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uri FROM sources UNION SELECT uri FROM pending ORDER BY uri"
            ).fetchall()
        for (uri,) in rows:
            yield uri

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM sources").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
