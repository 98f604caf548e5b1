"""Inputs cut to a model's token limit: counted since load and reported once per batch.

Every kind's ``tokenize`` truncates the same way (the tokenizer's own truncation, which marks an
encoding as ``overflowing``), so every kind counts and reports it here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import tokenizers


class TruncationCounter:
    """How many inputs were cut to the limit since load, across all threads.

    ``noun`` names the inputs in the log line ("documents", "pairs"); ``level`` is the log level
    of that line. ``total`` starts the count (a copy of a model carries on from its original's).
    """

    def __init__(
        self,
        logger: logging.Logger,
        noun: str = "inputs",
        *,
        level: int = logging.WARNING,
        total: int = 0,
    ) -> None:
        self._logger = logger
        self._noun = noun
        self._level = level
        self._lock = threading.Lock()
        self._total = total

    @property
    def total(self) -> int:
        return self._total

    def fork(self) -> TruncationCounter:
        """A counter of its own that starts at this one's total (for a copy of a model)."""
        return TruncationCounter(self._logger, self._noun, level=self._level, total=self._total)

    def record(self, encodings: Sequence[tokenizers.Encoding], limit: int) -> int:
        """Count the encodings the tokenizer cut to ``limit``; log one line when there are any."""
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            with self._lock:
                self._total += truncated
                total = self._total
            self._logger.log(
                self._level,
                "%d of %d %s exceed %d tokens and were truncated (%d since load)",
                truncated,
                len(encodings),
                self._noun,
                limit,
                total,
            )
        return truncated


__all__ = ["TruncationCounter"]
