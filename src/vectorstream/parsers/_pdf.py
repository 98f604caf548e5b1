"""PDF: one section per page, read page by page with pypdfium2."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..types import Section, Source
from ._options import ParseOptions
from ._registry import Warn

logger = logging.getLogger("vectorstream.parsers.pdf")

# C0 control characters other than tab and newline, and the byte-order mark, deleted.
_CONTROLS = {c: None for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFEFF, 0xFFFE)}


@dataclass(frozen=True, slots=True)
class PdfParser:
    """Each page's text layer becomes a section with ``page`` (1-based). Pages are loaded and
    released one at a time, so memory does not grow with the page count. Pages without a text
    layer (scans) are skipped and counted in one warning. If the PDF has an outline
    (bookmarks), each page's ``headings`` is the path of the last bookmark at or before it."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        import pypdfium2 as pdfium

        target: str | bytes
        if source.data is not None:
            target = source.data
        elif source.path is not None and source.text is None:
            target = source.path
        else:
            raise ParseError(f"{source.uri}: a PDF needs bytes or a file, not text")
        try:
            pdf = pdfium.PdfDocument(target)
        except pdfium.PdfiumError as exc:
            reason = str(exc)
            if "password" in reason.lower():
                raise ParseError(f"{source.uri}: encrypted PDF (needs a password)") from exc
            raise ParseError(
                f"{source.uri}: not a readable PDF, truncated or corrupt ({reason})"
            ) from exc
        except OSError as exc:
            raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
        try:
            pages = len(pdf)
            marks = _outline(pdf, pages)
            path: list[tuple[int, str]] = []
            textless: list[int] = []
            for number in range(1, pages + 1):
                for level, title in marks.get(number - 1, ()):
                    while path and path[-1][0] >= level:
                        path.pop()
                    path.append((level, title))
                try:
                    page = pdf[number - 1]
                    try:
                        textpage = page.get_textpage()
                        try:
                            text = textpage.get_text_range()
                        finally:
                            textpage.close()
                    finally:
                        page.close()
                except pdfium.PdfiumError as exc:
                    raise ParseError(
                        f"{source.uri}: page {number} of {pages} is unreadable ({exc})"
                    ) from exc
                # pdfium ends lines with \r\n, and emits control characters for unmapped glyphs
                # and hyphenation marks: noise to a tokenizer.
                text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)
                if not text.strip():
                    textless.append(number)
                    continue
                yield Section(
                    text=text,
                    source=source.uri,
                    page=number,
                    headings=tuple(title for _, title in path),
                    metadata={"pages": pages},
                )
            if textless:
                shown = ", ".join(map(str, textless[:10])) + (" …" if len(textless) > 10 else "")
                warn(
                    f"{source.uri}: {len(textless)} of {pages} page(s) have no text layer "
                    f"(scanned? OCR is not supported): {shown}"
                )
        finally:
            pdf.close()


def _outline(pdf: Any, pages: int) -> dict[int, list[tuple[int, str]]]:
    """Bookmarks by 0-based page index, in document order: ``{page: [(level, title), ...]}``.

    A broken outline must not cost the document its text, so any failure here gives no
    headings rather than an error.
    """
    marks: dict[int, list[tuple[int, str]]] = {}
    try:
        for item in pdf.get_toc(max_depth=16):
            dest = item.get_dest()
            index = dest.get_index() if dest is not None else None
            title = " ".join((item.get_title() or "").split())
            if index is None or not 0 <= index < pages or not title:
                continue
            marks.setdefault(index, []).append((int(item.level), title))
    except Exception:  # pdfium raises assorted errors on malformed outlines
        logger.debug("ignoring an unreadable PDF outline", exc_info=True)
        return {}
    return marks


__all__ = ["PdfParser"]
