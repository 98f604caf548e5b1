"""Plain text and source code: decoded incrementally, cut at paragraph/line boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ParseError, UnsupportedFormatError
from ..types import Section, Source
from ._cut import TextCutter
from ._detect import claimed_format, code_language
from ._options import ParseOptions
from ._read import iter_text, read_head
from ._registry import Warn


def _cut_sections(
    source: Source, options: ParseOptions, warn: Warn, metadata: dict[str, str]
) -> Iterator[Section]:
    cutter = TextCutter(options.max_section_chars)
    for piece in iter_text(source, warn, encoding=options.encoding):
        for text in cutter.feed(piece):
            yield Section(text=text, source=source.uri, metadata=metadata)
    for text in cutter.flush():
        yield Section(text=text, source=source.uri, metadata=metadata)


@dataclass(frozen=True, slots=True)
class TextParser:
    """Plain text: one section per ``max_section_chars`` window, cut at paragraph boundaries."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        return _cut_sections(source, options, warn, {})


@dataclass(frozen=True, slots=True)
class CodeParser:
    """Source code: as text, with ``metadata["language"]`` from the name or ``#!`` line."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        language = code_language(source, read_head(source, 256))
        return _cut_sections(source, options, warn, {"language": language})


@dataclass(frozen=True, slots=True)
class BinaryParser:
    """Refuses content that is not text in any encoding and has no parser."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        claimed = claimed_format(source)
        if claimed in ("pdf", "docx"):
            raise ParseError(
                f"{source.uri}: named like a {claimed.upper()} file but its content is not one "
                "(binary data of an unknown kind)"
            )
        raise ParseError(f"{source.uri}: binary content, not text or a supported document format")


@dataclass(frozen=True, slots=True)
class ImageParser:
    """Images are recognised but need an image embedding model, which text ingest lacks."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        raise UnsupportedFormatError(
            f"{source.uri}: an image; it needs an image model (register an image parser to "
            "ingest it)"
        )


__all__ = ["BinaryParser", "CodeParser", "ImageParser", "TextParser"]
