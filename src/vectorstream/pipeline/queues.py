"""A thread queue bounded in items *and* bytes, so memory depends on the buffer, not the input."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The queue was closed (the run is stopping)."""


class BoundedQueue(Generic[T]):
    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()
        self.peak_items = 0
        self.peak_bytes = 0

    def put(self, item: T, nbytes: int, timeout: float | None = None) -> None:
        """Block while full. One item larger than ``max_bytes`` is admitted into an empty queue."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    self._closed
                    or (
                        len(self._items) < self.max_items
                        and (self._bytes + nbytes <= self.max_bytes or not self._items)
                    )
                ),
                timeout,
            )
            if self._closed:
                raise Closed
            if not ok:
                raise TimeoutError("queue full")
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self.peak_items = max(self.peak_items, len(self._items))
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T:
        """Block while empty; raise ``Closed`` once closed and drained, ``TimeoutError`` on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._items:
                item, nbytes = self._items.popleft()
                self._bytes -= nbytes
                self._cond.notify_all()
                return item
            if self._closed:
                raise Closed
            if not ok:
                raise TimeoutError("queue empty")
            raise Closed  # pragma: no cover - wait_for returned without a reason

    def close(self) -> None:
        """No more puts; readers drain what is left, then get ``Closed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._cond:
            return self._bytes
