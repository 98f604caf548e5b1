"""Parsers: a source's bytes become :class:`~vectorstream.types.Section` objects, streamed.

    parse(source) ──registry.detect(source, head)──▶ registry.get(format).parse(...) ──▶ Section, …

Every section has ``index`` 0, 1, 2, … within its source, ``start`` (its offset in the document
text, the sections' texts concatenated: :func:`document_text`) and ``metadata["format"]``; none is
longer than ``ParseOptions.max_section_chars`` plus the blank text in front of it; blank text is
never a section of its own. Failures are
:class:`~vectorstream.errors.ParseError` (images: :class:`UnsupportedFormatError`), never a
vendor exception. Formats, detection and options are described in ``docs/formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
from ._registry import Parser, ParserRegistry, document_text
from ._tabular import AUTO_TEXT_FIELDS, CsvParser, JsonlParser
from ._text import BinaryParser, CodeParser, ImageParser, TextParser

#: The built-in parsers. Extend with ``DEFAULT_REGISTRY.with_parser(...)``, which returns a new
#: registry; hand that to ``parse(..., registry=)``, ``ingest(..., parsers=)`` or
#: ``PipelineOptions(parsers=)``.
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


def parse(
    source: Source,
    options: ParseOptions = ParseOptions(),
    on_warning: Callable[[str], None] | None = None,
    *,
    registry: ParserRegistry = DEFAULT_REGISTRY,
    format: str | None = None,
) -> Iterator[Section]:
    """Stream the sections of ``source``: ``registry.parse(source, options, on_warning, ...)``.

    The format is detected from the registry's rules, the first bytes and the name (see
    :func:`detect_format`) unless ``format`` names it. ``on_warning`` receives recoverable
    problems (replaced bytes, skipped rows, pages without text); by default they are logged. An
    empty source yields nothing. Raises :class:`~vectorstream.errors.ParseError` when the source
    cannot be read.
    """
    return registry.parse(source, options, on_warning, format=format)


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
    "document_text",
    "image_media_type",
    "parse",
    "read_head",
    "split_text",
]
