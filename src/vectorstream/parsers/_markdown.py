"""Markdown: sections split at headings, each carrying its heading path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..types import Section, Source
from ._cut import TextCutter
from ._options import ParseOptions
from ._read import iter_lines, iter_text
from ._registry import Warn

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*\n?\Z")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*\n?\Z")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# Lines that cannot be the text of a setext heading (list items, quotes, tables, fences).
_NOT_SETEXT_TEXT = re.compile(r"\s{0,3}(?:[-*+]\s|\d{1,9}[.)]\s|>|\||#)")


class _Sections:
    """The section being built: its heading path and a cutter bounding its size."""

    def __init__(self, source: Source, limit: int) -> None:
        self.uri = source.uri
        self.cutter = TextCutter(limit)
        self.stack: list[tuple[int, str]] = []

    def feed(self, text: str) -> Iterator[Section]:
        for piece in self.cutter.feed(text):
            yield self._section(piece)

    def flush(self) -> Iterator[Section]:
        for piece in self.cutter.flush():
            yield self._section(piece)

    def heading(self, level: int, title: str, line: str) -> Iterator[Section]:
        yield from self.flush()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title))
        yield from self.feed(line)

    def _section(self, text: str) -> Section:
        return Section(text=text, source=self.uri, headings=tuple(t for _, t in self.stack))


@dataclass(frozen=True, slots=True)
class MarkdownParser:
    """ATX (``## Title``) and setext (``Title`` / ``===``) headings outside code fences split
    sections; each section starts with its heading line and carries the heading path."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        out = _Sections(source, options.max_section_chars)
        fence: str | None = None
        front_matter = False
        first = True
        pending: str | None = None  # a paragraph line that a setext underline may promote
        for line, starts in iter_lines(iter_text(source, warn, encoding=options.encoding)):
            if first:
                first = False
                if line.rstrip() == "---":
                    front_matter = True
                    yield from out.feed(line)
                    continue
            if not starts or front_matter or fence is not None:
                if pending is not None:
                    yield from out.feed(pending)
                    pending = None
                yield from out.feed(line)
                if front_matter and starts and line.rstrip() in ("---", "..."):
                    front_matter = False
                elif fence is not None and starts:
                    stripped = line.strip()
                    if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                        fence = None
                continue
            m = _FENCE.match(line)
            if m:
                if pending is not None:
                    yield from out.feed(pending)
                    pending = None
                fence = m.group(1)
                yield from out.feed(line)
                continue
            m = _ATX.match(line)
            if m:
                if pending is not None:
                    yield from out.feed(pending)
                    pending = None
                yield from out.heading(len(m.group(1)), (m.group(2) or "").strip(), line)
                continue
            m = _SETEXT.match(line)
            if m and pending is not None:
                level = 1 if m.group(1).startswith("=") else 2
                yield from out.heading(level, pending.strip(), pending + line)
                pending = None
                continue
            if pending is not None:
                yield from out.feed(pending)
                pending = None
            if line.strip() and not _NOT_SETEXT_TEXT.match(line) and line.endswith("\n"):
                pending = line
            else:
                yield from out.feed(line)
        if pending is not None:
            yield from out.feed(pending)
        yield from out.flush()


__all__ = ["MarkdownParser"]
