"""Resident memory of this process and its children, cheap enough to sample ten times a second."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import psutil

CHILDREN_EVERY = 1.0  # seconds between looks for new child processes


class TreeRss:
    """Samples the RSS of a process and of its child processes (recursively).

    Finding the children (``psutil.Process.children``) reads every process of the machine; at
    ten samples a second that was about 1 ms each, a third of a CPU second over a 20-second
    ingest, taken from the cores the model runs on. The children are looked up again only every
    ``children_every`` seconds (workers are started at the beginning and replaced rarely); each
    sample reads only the processes it knows.
    """

    def __init__(
        self,
        proc: psutil.Process | None = None,
        *,
        children_every: float = CHILDREN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc = proc or psutil.Process()
        self.children_every = children_every
        self._clock = clock
        self._children: list[psutil.Process] = []
        self._looked = -float("inf")

    def sample(self) -> int | None:
        """Bytes resident in the tree now; None when this process cannot be read."""
        now = self._clock()
        try:
            if now - self._looked >= self.children_every:
                self._children = self.proc.children(recursive=True)
                self._looked = now
            rss = int(self.proc.memory_info().rss)
        except psutil.Error:
            return None
        for child in self._children:
            with contextlib.suppress(psutil.Error):  # a child that has exited counts nothing
                rss += int(child.memory_info().rss)
        return rss


__all__ = ["CHILDREN_EVERY", "TreeRss"]
