"""Cutting a stream of text into sections of bounded length at natural boundaries."""

from __future__ import annotations

from collections.abc import Iterator

# Boundaries tried in order, each only in the second half of the window so that every cut
# keeps at least half a window: that bounds the work per character and keeps cutting linear.
_BOUNDARIES = ("\n\n", "\n", " ", "\t")


def cut_point(text: str, start: int, limit: int) -> int:
    """Where to end the piece of ``text`` that begins at ``start`` and may hold ``limit`` chars.

    Returns an absolute index just after the last good boundary in the window.
    """
    end = start + limit
    for sep in _BOUNDARIES:
        at = text.rfind(sep, start + limit // 2, end)
        if at >= 0:
            return at + len(sep)
    # No boundary (a 5 MB line without spaces): a hard cut, but never between the halves of a
    # surrogate pair.
    if "\ud800" <= text[end - 1] <= "\udbff":
        return end - 1
    return end


class TextCutter:
    """Accumulates text pieces and releases sections of at most ``limit`` characters.

    Concatenating everything released gives back exactly what was fed, so callers can rely on
    no character being lost or added. Pieces are kept in a list and joined only when a window
    is full, so each character is copied a bounded number of times.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def feed(self, piece: str) -> Iterator[str]:
        if not piece:
            return
        self._parts.append(piece)
        self._size += len(piece)
        if self._size <= self.limit:
            return
        buf = "".join(self._parts)
        # Walk an offset through the buffer instead of re-slicing the rest after every cut:
        # one huge piece must not cost quadratic copying.
        pos = 0
        while len(buf) - pos > self.limit:
            cut = cut_point(buf, pos, self.limit)
            yield buf[pos:cut]
            pos = cut
        rest = buf[pos:]
        self._parts = [rest] if rest else []
        self._size = len(rest)

    def flush(self) -> Iterator[str]:
        if self._parts:
            buf = "".join(self._parts)
            self._parts = []
            self._size = 0
            yield buf


def split_text(text: str, limit: int) -> Iterator[str]:
    """Cut an in-memory text into pieces of at most ``limit`` characters."""
    if len(text) <= limit:
        yield text
        return
    cutter = TextCutter(limit)
    yield from cutter.feed(text)
    yield from cutter.flush()


__all__ = ["TextCutter", "cut_point", "split_text"]
