"""Parsers: a source's bytes become :class:`~vectorstream.types.Section` objects, streamed.

    parse(source) ──detect_format(head)──▶ registry.get(format).parse(...) ──▶ Section, Section, …

Every section has ``index`` 0, 1, 2, … within its source and ``metadata["format"]``; none is
longer than ``ParseOptions.max_section_chars``; blank ones are dropped. Failures are
:class:`~vectorstream.errors.ParseError` (images: :class:`UnsupportedFormatError`), never a
vendor exception. Formats, detection and options are described in ``docs/formats.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

from ..errors import ParseError, VectorstreamError
from ..types import Section, Source
from ._cut import split_text
from ._detect import CODE_LANGUAGES, FORMATS, code_language, detect_format
from ._docx import DocxParser
from ._html import HtmlParser
from ._image import ImageSectionParser, image_media_type
from ._markdown import MarkdownParser
from ._options import ParseOptions
from ._pdf import PdfParser
from ._read import HEAD_BYTES, read_head
from ._registry import Parser, ParserRegistry
from ._tabular import AUTO_TEXT_FIELDS, CsvParser, JsonlParser
from ._text import BinaryParser, CodeParser, ImageParser, TextParser

logger = logging.getLogger("vectorstream.parsers")

#: The built-in parsers. Extend with ``DEFAULT_REGISTRY.with_parser(...)`` (a new registry).
DEFAULT_REGISTRY = ParserRegistry(
    parsers=(
        ("text", TextParser()),
        ("markdown", MarkdownParser()),
        ("html", HtmlParser()),
        ("pdf", PdfParser()),
        ("docx", DocxParser()),
        ("csv", CsvParser()),
        ("jsonl", JsonlParser()),
        ("code", CodeParser()),
        ("image", ImageParser()),
        ("binary", BinaryParser()),
    )
)


def _log_warning(message: str) -> None:
    logger.warning("%s", message)


def parse(
    source: Source,
    options: ParseOptions = ParseOptions(),
    on_warning: Callable[[str], None] | None = None,
    *,
    registry: ParserRegistry = DEFAULT_REGISTRY,
    format: str | None = None,
) -> Iterator[Section]:
    """Stream the sections of ``source``.

    The format is detected from the first bytes and the name (see :func:`detect_format`)
    unless ``format`` names it. ``on_warning`` receives recoverable problems (replaced bytes,
    skipped rows, pages without text); by default they are logged. An empty source yields
    nothing. Raises :class:`~vectorstream.errors.ParseError` when the source cannot be read.
    """
    warn = on_warning or _log_warning
    fmt = format or "unknown"
    limit = options.max_section_chars
    try:
        if format is None:
            fmt = registry.detect(source, read_head(source))
        parser = registry.get(fmt)
        index = 0
        for section in parser.parse(source, options, warn):
            if section.image is None and not section.text.strip():
                continue
            metadata = {"format": fmt, **section.metadata}
            metadata["format"] = fmt
            for text in split_text(section.text, limit):
                if section.image is None and not text.strip():
                    continue
                yield dataclasses.replace(
                    section, text=text, source=source.uri, index=index, metadata=metadata
                )
                index += 1
    except VectorstreamError:
        raise
    except MemoryError as exc:
        raise ParseError(f"{source.uri}: too large to parse as {fmt} in memory") from exc
    except RecursionError as exc:
        raise ParseError(f"{source.uri}: nested too deeply to parse as {fmt}") from exc
    except OSError as exc:
        raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # the boundary: no vendor exception leaves a parser untranslated
        raise ParseError(
            f"{source.uri}: cannot parse as {fmt}: {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "AUTO_TEXT_FIELDS",
    "CODE_LANGUAGES",
    "DEFAULT_REGISTRY",
    "FORMATS",
    "HEAD_BYTES",
    "BinaryParser",
    "CodeParser",
    "CsvParser",
    "DocxParser",
    "HtmlParser",
    "ImageParser",
    "ImageSectionParser",
    "JsonlParser",
    "MarkdownParser",
    "ParseOptions",
    "Parser",
    "ParserRegistry",
    "PdfParser",
    "TextParser",
    "code_language",
    "detect_format",
    "image_media_type",
    "parse",
    "read_head",
    "split_text",
]
