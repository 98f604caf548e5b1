"""Markdown block structure of a section: heading lines, fenced code, blank-line paragraphs.

Only what chunking needs: where blocks start and end, and which lines are headings (ATX ``#``
headings and setext underlines). Lines inside fenced code are never headings, so a ``# comment``
in a Python block stays code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Closing "#"s need a space before them ("## C#" is about C#), as the markdown parser reads it.
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")


@dataclass(frozen=True, slots=True)
class Block:
    """``text[start:end]`` is a heading line (``level`` > 0) or a paragraph/code block (0)."""

    start: int
    end: int
    level: int = 0
    title: str = ""


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``(line_start, line_end)`` pairs of ``text[start:end]``, line ends excluding the newline."""
    out = []
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        if nl < 0:
            out.append((pos, end))
            break
        out.append((pos, nl))
        pos = nl + 1
    return out


def blocks(text: str, start: int = 0, end: int | None = None) -> list[Block]:
    """The blocks of ``text[start:end]`` in order; blank lines separate paragraphs."""
    stop = len(text) if end is None else end
    out: list[Block] = []
    para_start: int | None = None
    para_end = start
    fence: str | None = None

    def close() -> None:
        nonlocal para_start
        if para_start is not None:
            out.append(Block(para_start, para_end))
            para_start = None

    for a, b in _lines(text, start, stop):
        line = text[a:b]
        if fence is not None:
            para_end = b
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
                close()
            continue
        if not line.strip():
            close()
            continue
        opening = FENCE.match(line)
        if opening:
            close()
            fence = opening.group(1)
            para_start, para_end = a, b
            continue
        atx = _ATX.match(line)
        if atx:
            close()
            out.append(Block(a, b, len(atx.group(1)), (atx.group(2) or "").strip()))
            continue
        setext = _SETEXT.match(line)
        if setext and para_start is not None and text.count("\n", para_start, a) == 1:
            # "Title\n=====": a one-line paragraph followed by an underline is a heading.
            title = text[para_start : a - 1].strip()
            out.append(Block(para_start, b, 1 if setext.group(1)[0] == "=" else 2, title))
            para_start = None
            continue
        if para_start is None:
            para_start = a
        para_end = b
    close()
    return out
