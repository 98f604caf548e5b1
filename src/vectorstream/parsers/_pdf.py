"""PDF: one section per page, read page by page with pypdfium2."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ParseError
from ..types import Section, Source
from ._options import ParseOptions
from ._registry import Warn


@dataclass(frozen=True, slots=True)
class PdfParser:
    """Each page's text layer becomes a section with ``page`` (1-based). Pages are loaded and
    released one at a time, so memory does not grow with the page count. Pages without a text
    layer (scans) are skipped and counted in one warning."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        import pypdfium2 as pdfium

        if source.path is not None:
            target: str | bytes = source.path
        elif source.data is not None:
            target = source.data
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
            textless: list[int] = []
            for number in range(1, pages + 1):
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
                # pdfium ends lines with \r\n and may emit NULs for unmapped glyphs.
                text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
                if not text.strip():
                    textless.append(number)
                    continue
                yield Section(text=text, source=source.uri, page=number, metadata={"pages": pages})
            if textless:
                shown = ", ".join(map(str, textless[:10])) + (" …" if len(textless) > 10 else "")
                warn(
                    f"{source.uri}: {len(textless)} of {pages} page(s) have no text layer "
                    f"(scanned? OCR is not supported): {shown}"
                )
        finally:
            pdf.close()


__all__ = ["PdfParser"]
