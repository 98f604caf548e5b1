"""The resume manifest: what each source produced, under which settings, kept in the store itself.

The manifest is a side table of the store it describes (``VectorStore.side_table("manifest")``),
so every process on every machine that opens the store sees one state. A source's row is written
only *after* all of its records are in the store and its stale records are gone, so a run killed
at any moment leaves the manifest describing only finished work; the next run redoes the rest.

A row is *pending* from just before a source's first records are written until the source is
finished. Pending rows let ``--prune`` find sources that were never finished. A source with no
row at all may still have records (a store written before manifests lived in it, or a manifest
removed by hand): the pipeline looks for them instead of assuming there are none.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..stores.base import Doc, SideTable

log = logging.getLogger("vectorstream.pipeline.manifest")

TABLE = "manifest"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """A finished source: its stat, content hash, the settings it was embedded with, its chunks."""

    uri: str
    size: int | None
    mtime_ns: int | None
    content_hash: str
    settings: str
    chunks: int

    def to_doc(self) -> Doc:
        return {
            "state": "done",
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "content_hash": self.content_hash,
            "settings": self.settings,
            "chunks": self.chunks,
            "updated_at": time.time(),
        }

    @classmethod
    def from_doc(cls, uri: str, doc: Doc) -> ManifestEntry | None:
        if doc.get("state") != "done":
            return None
        return cls(
            uri,
            doc.get("size"),
            doc.get("mtime_ns"),
            str(doc["content_hash"]),
            str(doc["settings"]),
            int(doc.get("chunks") or 0),
        )


class Manifest:
    """The manifest of one collection, over the store's side table (thread-safe as the table is)."""

    def __init__(self, table: SideTable) -> None:
        self.table = table

    @classmethod
    def of(cls, store: object) -> Manifest:
        """The manifest kept in ``store`` (any ``VectorStore``)."""
        side_table = getattr(store, "side_table", None)
        if side_table is None:
            raise StoreError(f"store {getattr(store, 'uri', store)!r} cannot keep a manifest")
        return cls(side_table(TABLE))

    def get(self, uri: str) -> ManifestEntry | None:
        return self.get_many([uri]).get(uri)

    def get_many(self, uris: Sequence[str]) -> dict[str, ManifestEntry]:
        """Finished entries of ``uris`` (pending and unknown sources are left out)."""
        out = {}
        for uri, doc in self.table.get_many(list(uris)).items():
            entry = ManifestEntry.from_doc(uri, doc)
            if entry is not None:
                out[uri] = entry
        return out

    def states(self, uris: Sequence[str]) -> dict[str, str]:
        """``"done"`` or ``"pending"`` for each of ``uris`` that has a row."""
        return {u: str(d.get("state")) for u, d in self.table.get_many(list(uris)).items()}

    def put(self, entries: ManifestEntry | Iterable[ManifestEntry]) -> None:
        """Record finished sources (replacing their pending marks) in one write."""
        if isinstance(entries, ManifestEntry):
            entries = [entries]
        docs = {e.uri: e.to_doc() for e in entries}
        if docs:
            self.table.put_many(docs)

    def record(self, done: Iterable[ManifestEntry], pending: Iterable[str]) -> None:
        """Finished sources and new pending marks in one write (a mark wins over a row)."""
        docs: dict[str, Doc] = {e.uri: e.to_doc() for e in done}
        now = time.time()
        docs.update((u, {"state": "pending", "updated_at": now}) for u in pending)
        if docs:
            self.table.put_many(docs)

    def mark_pending(self, uris: Iterable[str]) -> None:
        """Mark sources whose records are about to be written (before the write)."""
        now = time.time()
        docs = {u: {"state": "pending", "updated_at": now} for u in uris}
        if docs:
            self.table.put_many(docs)

    def is_pending(self, uri: str) -> bool:
        return self.states([uri]).get(uri) == "pending"

    def remove(self, uris: str | Iterable[str]) -> None:
        """Forget sources entirely (their records must already be gone)."""
        keys = [uris] if isinstance(uris, str) else list(uris)
        if keys:
            self.table.delete_many(keys)

    def uris(self) -> Iterator[str]:
        """Every source that may have records: finished or pending."""
        for uri, _ in self.table.scan():
            yield uri

    def __len__(self) -> int:
        return sum(1 for _, doc in self.table.scan() if doc.get("state") == "done")

    def take_over(self, legacy: str | Path) -> int:
        """Move the rows of a per-machine manifest file (older releases) into this one.

        Rows the store already has win; the file is renamed ``*.taken-over`` so it is read once.
        Returns how many rows were moved.
        """
        path = Path(legacy)
        if not path.is_file():
            return 0
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                done = db.execute(
                    "SELECT uri, size, mtime_ns, content_hash, settings, chunks FROM sources"
                ).fetchall()
                pending = [u for (u,) in db.execute("SELECT uri FROM pending").fetchall()]
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("cannot read the old manifest %s (%s); it is left in place", path, exc)
            return 0
        docs: dict[str, Doc] = {}
        for row in done:
            docs[row[0]] = ManifestEntry(*row).to_doc()
        for uri in pending:  # pending wins: the old run may have left records of a newer version
            docs[uri] = {"state": "pending", "updated_at": time.time()}
        have = self.table.get_many(list(docs))
        new = {u: d for u, d in docs.items() if u not in have}
        if new:
            self.table.put_many(new)
        path.rename(path.with_name(path.name + ".taken-over"))
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        log.info("took over %d manifest rows from %s", len(new), path)
        return len(new)


__all__ = ["TABLE", "Manifest", "ManifestEntry"]
