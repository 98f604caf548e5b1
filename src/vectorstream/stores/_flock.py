"""A single-writer lock for embedded stores: an ``fcntl.flock`` on a lock file.

Embedded stores (LanceDB, and any adapter that writes files in place) are safe for many readers
but not for two writers. The writer takes an exclusive, non-blocking ``flock`` when it opens the
store; a second writer fails at once with :class:`StoreLockedError` instead of waiting or
corrupting the data. Readers never touch the lock, so they never block.

``flock`` locks belong to the open file, so the kernel drops the lock when the process dies,
even on SIGKILL: a crashed ingest never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from ..errors import StoreError, StoreLockedError

log = logging.getLogger("vectorstream.stores.lock")


class WriterLock:
    """An exclusive lock held on ``path`` until :meth:`release` (or process exit)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # named in the error message, e.g. "collection 'docs' at ./.vectorstream"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError` naming the holder's pid."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise StoreLockedError(
                f"{who} is already writing to {self.what} (lock file {self.path}); wait for it to "
                "finish, use another collection, or open the store read-only (mode='r') to search"
            ) from exc
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc}") from exc
        # The pid is only a hint for the error message above; the flock itself is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.debug("took the writer lock %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        log.debug("released the writer lock %s", self.path)


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


__all__ = ["WriterLock"]
