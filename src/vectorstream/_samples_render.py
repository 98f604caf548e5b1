"""The renderers of the sample corpus: one ``Doc`` as plain text, markdown, an HTML page, a PDF
or a DOCX.

The HTML page is a real one (head, nav, script and style that parsers must drop); the PDF is
written by reportlab in its invariant mode and the DOCX zip entries get a fixed timestamp, so two
renderings of a document are byte-identical. reportlab and python-docx are imported only when
their format is rendered.
"""

from __future__ import annotations

import html
import io
import re
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._samples_collect import Doc, Entry

_FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class _Block:
    """A paragraph or a code block of a docstring."""

    text: str
    code: bool


def _blocks(text: str) -> Iterator[_Block]:
    """Split a docstring into paragraphs and code blocks (doctests or indented blocks)."""
    for raw in re.split(r"\n\s*\n", text):
        lines = [line for line in raw.splitlines() if line.strip()]
        if not lines:
            continue
        is_code = all(
            line.lstrip().startswith((">>>", "...")) or line.startswith("    ") for line in lines
        )
        if is_code:
            yield _Block(text="\n".join(lines), code=True)
        else:
            yield _Block(text=" ".join(line.strip() for line in lines), code=False)


def _walk(doc: Doc) -> Iterator[tuple[int, str, Entry]]:
    """Headings in document order: (level, heading text, entry)."""
    for entry in doc.entries:
        prefix = "class " if entry.kind == "class" else ""
        yield 2, f"{prefix}{entry.name}{entry.signature}", entry
        for method in entry.methods:
            yield 3, f"{method.name}{method.signature}", method


def _render_txt(doc: Doc) -> bytes:
    out = [doc.title, "=" * len(doc.title), "", doc.summary, ""]
    for level, heading, entry in _walk(doc):
        indent = "    " * (level - 2)
        out.append(f"{indent}{heading}")
        out.append(f"{indent}{'-' * len(heading)}" if level == 2 else "")
        for block in _blocks(entry.doc):
            body = block.text if block.code else _wrap(block.text)
            out.extend(f"{indent}    {line}" for line in body.splitlines())
            out.append("")
    return ("\n".join(out).rstrip() + "\n").encode("utf-8")


def _wrap(text: str, width: int = 88) -> str:
    return textwrap.fill(text, width=width)


def _render_md(doc: Doc) -> bytes:
    out = [f"# {doc.title}", ""]
    out.extend(_md_blocks(doc.summary))
    for level, heading, entry in _walk(doc):
        out.extend([f"{'#' * level} `{heading}`", ""])
        out.extend(_md_blocks(entry.doc))
    return ("\n".join(out).rstrip() + "\n").encode("utf-8")


def _md_blocks(text: str) -> list[str]:
    out: list[str] = []
    for block in _blocks(text):
        if block.code:
            out.extend(["```python", _dedent(block.text), "```", ""])
        else:
            out.extend([block.text, ""])
    return out


def _dedent(text: str) -> str:
    return textwrap.dedent(text)


_HTML_STYLE = """
body { font-family: sans-serif; margin: 0 auto; max-width: 60rem; }
nav { background: #eee; padding: 0.5rem; } pre { background: #f6f6f6; padding: 0.5rem; }
"""
_HTML_SCRIPT = """
window.analytics = window.analytics || [];
document.addEventListener("DOMContentLoaded", function () {
  analytics.push({event: "page_view", path: location.pathname});
});
"""


def _render_html(doc: Doc) -> bytes:
    esc = html.escape
    nav = "".join(
        f'<li><a href="#e{i}">{esc(entry.name)}</a></li>' for i, entry in enumerate(doc.entries)
    )
    body: list[str] = [f"<h1>{esc(doc.title)}</h1>", *_html_blocks(doc.summary)]
    index = 0
    for level, heading, entry in _walk(doc):
        anchor = f' id="e{index}"' if level == 2 else ""
        index += level == 2
        body.append(f"<h{level}{anchor}><code>{esc(heading)}</code></h{level}>")
        body.extend(_html_blocks(entry.doc))
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(doc.title)}</title>\n"
        f"<style>{_HTML_STYLE}</style>\n<script>{_HTML_SCRIPT}</script>\n</head>\n<body>\n"
        f'<nav><a href="index.html">Library reference</a><ul>{nav}</ul></nav>\n'
        "<main><article>\n" + "\n".join(body) + "\n</article></main>\n"
        "<footer><p>Generated from the module's docstrings.</p></footer>\n"
        '<script>console.log("footer loaded");</script>\n</body>\n</html>\n'
    )
    return page.encode("utf-8")


def _html_blocks(text: str) -> list[str]:
    return [
        f"<pre><code>{html.escape(_dedent(b.text))}</code></pre>"
        if b.code
        else f"<p>{html.escape(b.text)}</p>"
        for b in _blocks(text)
    ]


def _render_pdf(doc: Doc) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, Preformatted, SimpleDocTemplate, Spacer

    styles = getSampleStyleSheet()
    esc = html.escape
    story: list[Any] = [Paragraph(esc(doc.title), styles["Heading1"])]

    def add_blocks(text: str) -> None:
        for block in _blocks(text):
            if block.code:
                story.append(Preformatted(_dedent(block.text), styles["Code"]))
            else:
                story.append(Paragraph(esc(block.text), styles["BodyText"]))

    add_blocks(doc.summary)
    for level, heading, entry in _walk(doc):
        story.append(Spacer(1, 4))
        story.append(Paragraph(esc(heading), styles[f"Heading{level}"]))
        add_blocks(entry.doc)
    buffer = io.BytesIO()
    # invariant=1 drops the creation date and random document id: byte-identical rebuilds.
    template = SimpleDocTemplate(buffer, pagesize=A4, title=doc.title, invariant=1)
    template.build(story)
    return buffer.getvalue()


def _render_docx(doc: Doc) -> bytes:
    import datetime

    import docx
    from docx.oxml.ns import qn
    from docx.shared import Pt

    document = docx.Document()
    document.add_heading(doc.title, level=0)

    def add_blocks(text: str) -> None:
        for block in _blocks(text):
            if block.code:
                run = document.add_paragraph().add_run(_dedent(block.text))
                run.font.name = "Courier New"
                run.font.size = Pt(9)
            else:
                document.add_paragraph(block.text)

    add_blocks(doc.summary)
    table = document.add_table(rows=1, cols=3)
    table.style = "Table Grid"
    for cell, label in zip(table.rows[0].cells, ("Name", "Kind", "Summary"), strict=True):
        cell.text = label
    for entry in doc.entries:
        cells = table.add_row().cells
        cells[0].text = entry.name
        cells[1].text = entry.kind
        cells[2].text = entry.doc.split("\n", 1)[0][:200]
    for level, heading, entry in _walk(doc):
        document.add_heading(heading, level=level - 1)
        add_blocks(entry.doc)
    # The schema requires w:percent on w:zoom (Word always writes it); python-docx's template
    # omits it and strict readers (EmbedAnything's docx parser) refuse the file without it.
    zoom = document.settings.element.find(qn("w:zoom"))
    if zoom is not None and zoom.get(qn("w:percent")) is None:
        zoom.set(qn("w:percent"), "100")
    fixed = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    props = document.core_properties
    props.created = props.modified = props.last_printed = fixed
    props.title = doc.title
    raw = io.BytesIO()
    document.save(raw)
    return _fix_zip_times(raw.getvalue())


def _fix_zip_times(data: bytes) -> bytes:
    # python-docx stamps each zip member with the current time; a fixed stamp makes rebuilds equal.
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(member, src.read(info.filename))
    return out.getvalue()


RENDERERS: dict[str, Callable[[Doc], bytes]] = {
    "txt": _render_txt,
    "md": _render_md,
    "html": _render_html,
    "pdf": _render_pdf,
    "docx": _render_docx,
}


__all__ = ["RENDERERS"]
