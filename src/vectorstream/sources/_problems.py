"""What went wrong while enumerating sources (a missing path, an unreadable folder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """One path that could not be enumerated; the walk goes on without it.

    ``kind`` is one of ``"missing"``, ``"unreadable"``, ``"broken-link"``, ``"not-a-file"`` (a
    socket, FIFO or device) for files, and ``"unsupported"``, ``"http-error"``,
    ``"unreachable"``, ``"too-large"`` for URLs, so callers can group problems without parsing
    messages. ``path`` is the file path or the URL.
    """

    path: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


__all__ = ["SourceProblem"]
