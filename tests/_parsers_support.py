"""Generators of test documents for the parser and source tests: every file is made at run time."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path


def make_pdf(
    path: Path,
    pages: Sequence[Sequence[str]],
    outline: Sequence[tuple[int, int, str]] = (),
) -> Path:
    """A PDF with one page per entry, each line of the entry drawn as a text line (reportlab).

    ``outline`` adds bookmarks: ``(0-based page, level, title)``.
    """
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4, invariant=True)
    for index, lines in enumerate(pages):
        for n, (page, level, title) in enumerate(outline):
            if page == index:
                c.bookmarkPage(f"b{n}")
                c.addOutlineEntry(title, f"b{n}", level=level)
        y = 800.0
        for line in lines:
            c.drawString(72, y, line)
            y -= 16
        c.showPage()
    c.save()
    return path


def make_docx(path: Path, blocks: Sequence[tuple[str, object]]) -> Path:
    """A DOCX from ``(kind, value)`` blocks: ``("title", str)``, ``("h1".."h3", str)``,
    ``("p", str)`` or ``("table", [[cell, ...], ...])``."""
    import docx

    document = docx.Document()
    for kind, value in blocks:
        if kind == "title":
            document.add_heading(str(value), level=0)
        elif kind.startswith("h"):
            document.add_heading(str(value), level=int(kind[1:]))
        elif kind == "p":
            document.add_paragraph(str(value))
        elif kind == "table":
            rows = list(value)  # type: ignore[call-overload]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for col, cell in enumerate(row):
                    table.cell(r, col).text = str(cell)
        else:
            raise ValueError(kind)
    document.save(str(path))
    return path


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A valid, tiny, grey PNG image built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def deep_html(levels: int) -> str:
    return "<html><body>" + "<div>" * levels + "deep text" + "</div>" * levels + "</body></html>"


#: Name -> (file name, why it is broken). Each is expected to raise ParseError when parsed.
BROKEN = {
    "truncated_pdf": "truncated.pdf",
    "binary_txt": "junk.txt",
    "docx_not_zip": "fake.docx",
    "png_image": "picture.png",
    "random_pdf": "random.pdf",
    "truncated_docx": "truncated.docx",
    "jsonl_not_jsonl": "array.jsonl",
    "too_deep_html": "abyss.html",
}


def make_broken_corpus(root: Path) -> dict[str, Path]:
    """Write the broken files (and return their paths by key of :data:`BROKEN`)."""
    import random

    rng = random.Random(1234)
    root.mkdir(parents=True, exist_ok=True)
    out = {key: root / name for key, name in BROKEN.items()}
    good_pdf = make_pdf(root / "_whole.pdf", [[f"page {i} text"] for i in range(1, 6)])
    data = good_pdf.read_bytes()
    good_pdf.unlink()
    out["truncated_pdf"].write_bytes(data[: len(data) // 3])
    out["binary_txt"].write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    out["docx_not_zip"].write_bytes(b"\x00\x01\x02 this is not a zip archive \xff\xfe" * 40)
    out["png_image"].write_bytes(png_bytes())
    out["random_pdf"].write_bytes(b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(2048)))
    good_docx = make_docx(root / "_whole.docx", [("h1", "Title"), ("p", "body " * 200)])
    docx_data = good_docx.read_bytes()
    good_docx.unlink()
    out["truncated_docx"].write_bytes(docx_data[: len(docx_data) // 2])
    out["jsonl_not_jsonl"].write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    out["too_deep_html"].write_text(deep_html(50_000))
    return out


def make_odd_but_valid(root: Path) -> dict[str, Path]:
    """Files that look hostile but must parse: each yields text, never an error."""
    root.mkdir(parents=True, exist_ok=True)
    out = {
        "empty": root / "empty.txt",
        "long_line": root / "long_line.txt",
        "deep_html": root / "deep.html",
        "html_named_pdf": root / "page.pdf",
        "invalid_utf8": root / "invalid.txt",
        "utf16": root / "utf16.txt",
    }
    out["empty"].write_bytes(b"")
    out["long_line"].write_text("x" * 5_000_000)
    out["deep_html"].write_text(deep_html(5000))
    out["html_named_pdf"].write_text(
        "<!DOCTYPE html><html><head><title>Not a PDF</title></head>"
        "<body><p>Served as HTML despite the name.</p></body></html>"
    )
    out["invalid_utf8"].write_bytes(
        "Grüße aus Köln, ".encode() + b"\xff\xfe\xc3" + b" und weiter geht es.\n"
    )
    out["utf16"].write_bytes("Ünïcödé text in UTF-16\nsecond line\n".encode("utf-16"))
    return out
