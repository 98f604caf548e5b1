"""``ContextStore``: a ``ContextDB`` under a disk budget, with least-recently-used eviction.

``ContextDB`` writes a context to a temporary folder (``.tmp-*``) and renames it into place, but a
writer killed before the rename leaves that folder behind, and ``ContextDB.contexts()`` would list
it once its ``meta.json`` exists. This wrapper therefore, on opening, removes every leftover
temporary or half-deleted folder and every folder missing one of a context's files, lists only
complete contexts, and deletes by renaming first (``.del-*``), so a context is never seen half
gone either. Beside each context it keeps a small record ``<id>.json`` (where it came from, when
it was made); its modification time is the context's last use, so the order survives a restart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ._config import SparseConfig
from ._contextdb import ContextDB

__all__ = ["ContextStore", "ContextTooLargeError", "StoredContext", "UnknownContextError"]

log = logging.getLogger("vectorstream.attention.store_index")

_CONTEXT_FILES = ("meta.json", "tokens.npy", "kv.safetensors")
_SCRATCH_PREFIXES = (".tmp-", ".del-")


class UnknownContextError(ConfigError):
    """No stored context has this id."""

    def __init__(self, context_id: str) -> None:
        super().__init__(f"no stored context has the id {context_id!r}")
        self.context_id = context_id


class ContextTooLargeError(ConfigError):
    """A context needs more disk than the whole budget."""


@dataclass(frozen=True)
class StoredContext:
    """A complete stored context: its size on disk, origin and last use (Unix seconds)."""

    id: str
    n_tokens: int
    bytes: int
    created: float
    last_used: float
    source: str  # "api" (stored on request) or "auto" (a long prompt kept on the fly)
    origin: Mapping[str, Any] = field(default_factory=dict, hash=False)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


class ContextStore:
    """Complete contexts of one model, at most ``budget_bytes`` on disk (0: no limit).

    Every method takes one lock: the server's generation worker reads and writes while request
    handlers list and delete.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: SparseConfig | None = None,
        *,
        budget_bytes: int = 0,
        kv_dtype: str | None = None,
    ) -> None:
        if budget_bytes < 0:
            raise ConfigError(f"the context budget must be >= 0 bytes, got {budget_bytes}")
        self.db = ContextDB(path, config, kv_dtype=kv_dtype)
        self.path = self.db.path
        self.budget_bytes = budget_bytes
        self._lock = threading.RLock()
        self._index: dict[str, StoredContext] = {}
        self._recover()

    # -- opening --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Drop what a killed writer or deleter left; index the complete contexts."""
        for entry in self.path.iterdir():
            if entry.is_dir() and entry.name.startswith(_SCRATCH_PREFIXES):
                log.warning("removing the incomplete context folder %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_file() and entry.name.startswith(_SCRATCH_PREFIXES):
                entry.unlink(missing_ok=True)
        for folder in sorted(p for p in self.path.iterdir() if p.is_dir()):
            if not all((folder / name).is_file() for name in _CONTEXT_FILES):
                log.warning("removing the incomplete context folder %s", folder)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                self._index[folder.name] = self._read_record(folder.name)
            except StoreError as exc:
                log.warning("removing an unreadable context %s: %s", folder.name, exc)
                shutil.rmtree(folder, ignore_errors=True)
        for record in self.path.glob("*.json"):
            if record.stem not in self._index:
                record.unlink(missing_ok=True)

    def _read_record(self, context_id: str) -> StoredContext:
        info = self.db._info(context_id)
        folder = self.path / context_id
        record = self.path / f"{context_id}.json"
        extra: dict[str, Any] = {}
        if record.is_file():
            try:
                extra = json.loads(record.read_text())
            except (OSError, ValueError):
                log.warning(
                    "the record of context %s is unreadable; keeping the context", context_id
                )
        used = record.stat().st_mtime if record.is_file() else folder.stat().st_mtime
        return StoredContext(
            id=context_id,
            n_tokens=info.n_tokens,
            bytes=_folder_bytes(folder),
            created=float(extra.get("created", folder.stat().st_mtime)),
            last_used=used,
            source=str(extra.get("source", "unknown")),
            origin=dict(extra.get("origin") or {}),
        )

    # -- reading --------------------------------------------------------------------------------
    def contexts(self) -> list[StoredContext]:
        """Complete contexts, most recently used first."""
        with self._lock:
            return sorted(self._index.values(), key=lambda c: c.last_used, reverse=True)

    def get(self, context_id: str) -> StoredContext:
        with self._lock:
            found = self._index.get(context_id)
        if found is None:
            raise UnknownContextError(context_id)
        return found

    def tokens(self, context_id: str) -> list[int]:
        self.get(context_id)
        return [int(t) for t in self.db.tokens(context_id)]

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(c.bytes for c in self._index.values())

    def touch(self, context_id: str) -> None:
        """Mark a context as just used (LRU order, kept across restarts by the record's mtime)."""
        with self._lock:
            found = self._index.get(context_id)
            if found is None:
                return
            now = time.time()
            self._index[context_id] = dataclasses.replace(found, last_used=now)
            record = self.path / f"{context_id}.json"
            if record.is_file():
                os.utime(record, (now, now))

    def create_session(self, input_ids: list[int], config: SparseConfig) -> tuple[Any, list[int]]:
        """``ContextDB.create_session`` over complete contexts only; the reused one is touched."""
        with self._lock:
            session, rest = self.db.create_session(input_ids, config)
            if session.context_id is not None:
                self.touch(session.context_id)
            return session, rest

    # -- writing --------------------------------------------------------------------------------
    def store(
        self,
        session: Any,
        *,
        source: str,
        origin: Mapping[str, Any] | None = None,
        build_index: bool = False,
    ) -> StoredContext:
        """Write ``session``'s context, evicting the least recently used ones to fit the budget."""
        n = session.get_seq_length()
        estimate = int(self._bytes_per_token(session) * n)
        with self._lock:
            if self.budget_bytes and estimate > self.budget_bytes:
                raise ContextTooLargeError(
                    f"a context of {n} tokens needs about {estimate} bytes, more than the whole "
                    f"context budget of {self.budget_bytes} bytes"
                )
            self._evict(estimate, keep=None)
            context_id = self.db.store(session, build_index=build_index)
            now = time.time()
            created = self._index[context_id].created if context_id in self._index else now
            body = {"created": created, "source": source, "origin": dict(origin or {})}
            tmp = self.path / f".tmp-{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(body))
            tmp.replace(self.path / f"{context_id}.json")
            stored = StoredContext(
                id=context_id,
                n_tokens=n,
                bytes=_folder_bytes(self.path / context_id),
                created=created,
                last_used=now,
                source=source,
                origin=dict(origin or {}),
            )
            self._index[context_id] = stored
            self._evict(0, keep=context_id)
        log.info("stored context %s (%d tokens, %d bytes, %s)", context_id, n, stored.bytes, source)
        return stored

    def _bytes_per_token(self, session: Any) -> float:
        """Disk bytes per token: from a stored context when there is one, else the session's KV."""
        with self._lock:
            for found in self._index.values():
                if found.n_tokens:
                    return found.bytes / found.n_tokens
        # Keys and values dominate (tokens take 8 bytes; no index below graph_min keys); a float32
        # context also keeps its int8 key sketch, one byte per key element and a scale per key.
        n = max(1, session.get_seq_length())
        total = 0
        for k, v in session.kv():
            total += k.element_size() * k.numel() + v.element_size() * v.numel()
            if str(k.dtype) == "torch.float32":
                total += k.numel() + 4 * (k.numel() // k.shape[-1])
        return 8 + total / n

    def _evict(self, incoming: int, keep: str | None) -> None:
        """Delete least recently used contexts until ``incoming`` more bytes fit the budget."""
        if not self.budget_bytes:
            return
        for victim in sorted(self._index.values(), key=lambda c: c.last_used):
            if self.used_bytes + incoming <= self.budget_bytes:
                return
            if victim.id == keep:
                continue
            log.info("evicting context %s (%d bytes, least recently used)", victim.id, victim.bytes)
            self.delete(victim.id)

    def delete(self, context_id: str) -> bool:
        """Remove a context; it disappears at once (renamed away first), then its files go."""
        with self._lock:
            if self._index.pop(context_id, None) is None:
                return False
            folder = self.path / context_id
            doomed = self.path / f".del-{uuid.uuid4().hex}"
            try:
                folder.rename(doomed)
            except OSError as exc:
                raise StoreError(f"cannot delete context {context_id}: {exc}") from exc
            (self.path / f"{context_id}.json").unlink(missing_ok=True)
        shutil.rmtree(doomed, ignore_errors=True)
        return True
