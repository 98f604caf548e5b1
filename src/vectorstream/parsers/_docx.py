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


def _heading_level(paragraph: Any) -> int | None:
    try:
        style = paragraph.style
        name = (style.name or "") if style is not None else ""
    except (KeyError, AttributeError, ValueError):
        return None  # a dangling style reference: treat as body text
    if name.lower() == "title":
        return 0
    m = _HEADING_STYLE.match(name.strip())
    return int(m.group(1)) if m else None


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
    sections and form the heading path; tables become ``cell | cell`` lines in place."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        from docx import Document
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        if source.path is not None:
            target: Any = source.path
        elif source.data is not None:
            target = io.BytesIO(source.data)
        else:
            raise ParseError(f"{source.uri}: a DOCX needs bytes or a file, not text")
        try:
            if not zipfile.is_zipfile(target):
                # python-docx would say "package not found": name the real problem instead.
                raise ParseError(
                    f"{source.uri}: not a valid DOCX file (not a zip archive, or a truncated one)"
                )
            document = Document(target)
        except ParseError:
            raise
        except OSError as exc:
            raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # BadZipFile, PackageNotFoundError, KeyError, XMLSyntaxError…
            raise ParseError(
                f"{source.uri}: not a valid DOCX file ({type(exc).__name__}: {exc})"
            ) from exc
        out = _Sections(source, options.max_section_chars)
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = block.text
                level = _heading_level(block)
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
