"""DOCX (Word): paragraphs and tables in document order, split at heading paragraphs."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..types import Section, Source
from ._markdown import _Sections
from ._options import ParseOptions
from ._registry import Warn

_HEADING_STYLE = re.compile(r"heading\s*([1-9])\Z", re.I)


def _level_of_name(name: str) -> int | None:
    if name.strip().lower() == "title":
        return 0
    m = _HEADING_STYLE.match(name.strip())
    return int(m.group(1)) if m else None


class _HeadingLevels:
    """Heading level by paragraph style id, computed once per document.

    ``paragraph.style`` in python-docx scans every style of the document on each call (and the
    default style on each unstyled paragraph): a 400-paragraph file took 1.3 s. Reading the style
    id from the paragraph's XML and resolving it here makes that cost per style, not per paragraph.
    A custom style based on a heading style counts as that heading. The styles are read from
    their XML in one pass: python-docx's ``base_style`` finds a style's base by an XPath search
    over every style, so following each style's chain through it cost O(styles²), about 25 ms
    for a document of the default template.
    """

    def __init__(self, document: Any) -> None:
        from docx.enum.style import WD_STYLE_TYPE

        self.by_id: dict[str, int | None] = {}
        self.default: int | None = None
        try:
            elements = list(document.styles.element.style_lst)
        except (KeyError, AttributeError, ValueError):
            return  # no usable styles part: every paragraph is body text
        # (name, base id) by style id; of two styles with one id the first counts, as in
        # python-docx's own lookup.
        own: dict[str, tuple[str, str | None]] = {}
        for element in elements:
            style_id = element.styleId
            if style_id and style_id not in own:
                own[style_id] = (element.name_val or "", element.basedOn_val)
        for element in elements:
            level = _chain_level(own, element.name_val or "", element.basedOn_val)
            style_id = element.styleId
            if style_id:
                self.by_id[style_id] = level
            try:
                kind = element.type
                if kind in (None, WD_STYLE_TYPE.PARAGRAPH) and element.default:
                    self.default = level
            except (AttributeError, ValueError):
                pass

    def level(self, paragraph: Any) -> int | None:
        style_id = paragraph._p.style  # the w:pStyle value, read without a style scan
        if style_id is None:
            return self.default
        return self.by_id.get(style_id)


def _chain_level(own: dict[str, tuple[str, str | None]], name: str, base: str | None) -> int | None:
    """The heading level of a style named ``name`` based on style ``base``: its own, else its
    base's, and so on (at most 20 steps: a cycle of bases ends there)."""
    for _ in range(20):
        level = _level_of_name(name)
        if level is not None or base is None or base not in own:
            return level
        name, base = own[base]
    return None


def _table_lines(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # A merged cell appears once per grid column it spans: keep it once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            yield " | ".join(cells) + "\n"


@dataclass(frozen=True, slots=True)
class DocxParser:
    """Word documents via python-docx. Paragraphs styled ``Title`` or ``Heading N`` split
    sections and form the heading path; tables become ``cell | cell`` lines in place.

    python-docx inflates and parses whole XML parts in memory, so a zip whose parts would
    inflate beyond ``max_uncompressed_bytes`` (a "zip bomb", or just an absurd document) is
    refused before anything is inflated.
    """

    max_uncompressed_bytes: int = 512 * 1024 * 1024

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        from docx import Document
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        target: Any
        if source.data is not None:
            target = io.BytesIO(source.data)
        elif source.path is not None and source.text is None:
            target = source.path
        else:
            raise ParseError(f"{source.uri}: a DOCX needs bytes or a file, not text")
        try:
            if not zipfile.is_zipfile(target):
                # python-docx would say "package not found": name the real problem instead.
                raise ParseError(
                    f"{source.uri}: not a valid DOCX file (not a zip archive, or a truncated one)"
                )
            with zipfile.ZipFile(target) as archive:
                inflated = sum(info.file_size for info in archive.infolist())
            if inflated > self.max_uncompressed_bytes:
                raise ParseError(
                    f"{source.uri}: DOCX parts would inflate to {inflated:,} bytes, over the "
                    f"{self.max_uncompressed_bytes:,}-byte limit"
                )
            if isinstance(target, io.BytesIO):
                target.seek(0)
            document = Document(target)
        except ParseError:
            raise
        except OSError as exc:
            raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # BadZipFile, PackageNotFoundError, KeyError, XMLSyntaxError…
            raise ParseError(
                f"{source.uri}: not a valid DOCX file ({type(exc).__name__}: {exc})"
            ) from exc
        levels = _HeadingLevels(document)
        out = _Sections(source, options.max_section_chars)
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = block.text
                level = levels.level(block)
                if level is not None and text.strip():
                    yield from out.heading(level, text.strip(), text.strip() + "\n\n")
                elif text.strip():
                    yield from out.feed(text + "\n\n")
            elif isinstance(block, Table):
                for line in _table_lines(block):
                    yield from out.feed(line)
                yield from out.feed("\n")
        yield from out.flush()


__all__ = ["DocxParser"]
