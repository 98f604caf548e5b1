"""Handing the heap that LanceDB's writes freed back to the system.

A multivector commit is tens of megabytes (a window of 256 ColBERT chunks is about 25 MB of
vectors), and LanceDB builds, encodes and frees copies of it on its own writer threads. glibc
malloc keeps what those threads free in per-thread arenas instead of returning it, so the
resident memory of an ingest grew with the number of large commits, and the end-of-run
compaction then allocated on top of it. ``malloc_trim(0)`` returns the free pages of every
arena; measured on a ×10 ColBERT ingest, it gave back about 100 MiB after the writes and the
compaction peak fell by as much.

A trim walks the heap (milliseconds), so :class:`HeapTrimmer` trims only once every
``every_bytes`` written: dense commits, a few MB each, reach that rarely. Elsewhere than glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("vectorstream.stores.lancedb")

TRIM_EVERY_BYTES = 32 * 2**20


def _glibc_trim() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)

    return run


_TRIM = _glibc_trim()


def release_free_heap() -> bool:
    """Return malloc's free pages to the system now; whether this platform can."""
    if _TRIM is None:
        return False
    _TRIM()
    return True


class HeapTrimmer:
    """Counts bytes written and releases the free heap once ``every_bytes`` have gone by."""

    def __init__(self, every_bytes: int = TRIM_EVERY_BYTES) -> None:
        if every_bytes < 1:
            raise ValueError("every_bytes must be positive")
        self.every_bytes = every_bytes
        self.trims = 0
        self._since = 0
        self._lock = threading.Lock()

    def wrote(self, nbytes: int) -> bool:
        """Count ``nbytes`` written; trim when the budget is reached. Whether it trimmed."""
        with self._lock:
            self._since += nbytes
            if self._since < self.every_bytes:
                return False
            self._since = 0
        return self.release()

    def release(self) -> bool:
        """Trim now (before and after a compaction, say) and start counting again."""
        with self._lock:
            self._since = 0
        if not release_free_heap():
            return False
        self.trims += 1
        log.debug("returned free heap memory to the system (trim %d)", self.trims)
        return True


__all__ = ["TRIM_EVERY_BYTES", "HeapTrimmer", "release_free_heap"]
