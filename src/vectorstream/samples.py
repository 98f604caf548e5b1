"""A sample corpus built at run time from material already on the machine.

The demo, the tests and every benchmark need a realistic, mixed-format corpus without a network
and without checking documents into the repository. The Python standard library documents itself:
each chosen module's docstrings (module, classes, methods, functions, read with :mod:`inspect`)
are rendered as plain text, markdown, a real HTML page (head, nav, script and style that parsers
must drop), a multi-page PDF (reportlab) and a DOCX (python-docx: headings, paragraphs, a table).

The output is deterministic for a given seed on a given Python: memory addresses are scrubbed
from signatures, the PDF is written in reportlab's invariant mode and the DOCX zip entries get a
fixed timestamp, so two builds are byte-identical.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import inspect
import io
import logging
import os
import random
import re
import textwrap
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from .errors import ConfigError

logger = logging.getLogger("vectorstream.samples")

FORMATS: tuple[str, ...] = ("md", "html", "txt", "pdf", "docx")

# Pure-Python (or quiet C) stdlib modules with real documentation. Importing any of them has no
# side effect beyond the import; those missing from a given build are skipped at run time.
_CANDIDATE_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "dis", "email.message", "enum", "filecmp", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib",
    "heapq", "hmac", "html.parser", "http.client", "http.cookies", "imaplib", "inspect",
    "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging",
    "logging.handlers", "lzma", "mailbox", "mimetypes", "numbers", "operator", "optparse",
    "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue", "quopri",
    "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "smtplib", "socketserver", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "typing",
    "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)  # fmt: skip

# Caps keep one document in the range of a few thousand tokens, like a typical page of docs.
_MAX_ENTRIES = 24
_MAX_METHODS = 8
_MAX_DOC_CHARS = 2400

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class CorpusInfo:
    """What :func:`build_sample_corpus` wrote: folder, file count, total bytes, files per format."""

    path: Path
    files: int
    bytes: int
    by_format: Mapping[str, int] = field(default_factory=dict)
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_format", MappingProxyType(dict(self.by_format)))


@dataclass(frozen=True, slots=True)
class _Entry:
    """One documented object: a class (with methods) or a function."""

    kind: str
    name: str
    signature: str
    doc: str
    methods: tuple[_Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class _Doc:
    """One module's documentation, ready to render in any format."""

    module: str
    title: str
    summary: str
    entries: tuple[_Entry, ...]


@dataclass(frozen=True, slots=True)
class _Block:
    """A paragraph or a code block of a docstring."""

    text: str
    code: bool


def build_sample_corpus(
    dest: str | os.PathLike[str],
    *,
    documents: int = 40,
    scale: int = 1,
    formats: Sequence[str] = FORMATS,
    seed: int = 0,
) -> CorpusInfo:
    """Write a mixed-format corpus of stdlib documentation under ``dest`` and describe it.

    ``documents`` source documents (one module each, cycling with variations if more are asked
    for than modules exist) are spread over ``formats`` in turn; ``scale`` writes that many
    distinct copies of each (suffixed, with small deterministic variations so content hashes
    differ). Formats whose library is missing (reportlab, python-docx) are skipped with a warning.
    """
    if documents < 1:
        raise ConfigError(f"documents must be >= 1, got {documents}")
    if scale < 1:
        raise ConfigError(f"scale must be >= 1, got {scale}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ConfigError(f"unknown formats {unknown}; choose from {list(FORMATS)}")
    usable = [f for f in dict.fromkeys(formats) if _format_available(f)]
    if not usable:
        raise ConfigError(f"none of the formats {list(formats)} can be written here")

    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    docs = _load_docs(seed)
    if not docs:
        raise ConfigError("no standard-library module could be documented")

    cycles = -(-documents // len(docs))
    by_format: dict[str, int] = {}
    total_bytes = 0
    files = 0
    used: list[str] = []
    for i in range(documents):
        doc = docs[i % len(docs)]
        fmt = usable[i % len(usable)]
        used.append(doc.module)
        for copy in range(scale):
            variant = copy * cycles + i // len(docs)
            text_doc = _vary(doc, variant, seed) if variant else doc
            stem = doc.module.replace(".", "_")
            name = f"{i:04d}_{stem}" + (f"--v{variant}" if variant else "") + f".{fmt}"
            data = _RENDERERS[fmt](text_doc)
            (root / name).write_bytes(data)
            by_format[fmt] = by_format.get(fmt, 0) + 1
            total_bytes += len(data)
            files += 1
    logger.debug("sample corpus: %d files, %d bytes in %s", files, total_bytes, root)
    return CorpusInfo(
        path=root,
        files=files,
        bytes=total_bytes,
        by_format=dict(sorted(by_format.items())),
        modules=tuple(used),
    )


# ---------------------------------------------------------------- material


def _load_docs(seed: int) -> list[_Doc]:
    order = list(_CANDIDATE_MODULES)
    random.Random(seed).shuffle(order)
    docs: list[_Doc] = []
    for name in order:
        try:
            module = _quiet_import(name)
            doc = _document_module(module)
        except Exception as exc:  # any failure means "not this module"; the corpus goes on
            logger.debug("skipping module %s: %s", name, exc)
            continue
        if doc.entries:
            docs.append(doc)
    return docs


def _quiet_import(name: str) -> ModuleType:
    # Some modules warn or write on import in some builds; none of that may reach the user.
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def _document_module(module: ModuleType) -> _Doc:
    entries: list[_Entry] = []
    public = getattr(module, "__all__", None)
    names = sorted(public) if isinstance(public, list | tuple) else sorted(vars(module))
    for name in names:
        if name.startswith("_") or len(entries) >= _MAX_ENTRIES:
            continue
        obj = getattr(module, name, None)
        if obj is None or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            entry = _class_entry(name, obj)
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            entry = _function_entry(name, obj, "function")
        else:
            continue
        if entry.doc or entry.methods:
            entries.append(entry)
    summary = _clean(inspect.getdoc(module) or f"The {module.__name__} module.")
    return _Doc(
        module=module.__name__,
        title=f"{module.__name__}: {summary.splitlines()[0] if summary else ''}".rstrip(": "),
        summary=summary,
        entries=tuple(entries),
    )


def _class_entry(name: str, cls: type) -> _Entry:
    methods: list[_Entry] = []
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_") or len(methods) >= _MAX_METHODS:
            continue
        if inspect.isfunction(value):
            method = _function_entry(f"{name}.{attr}", value, "method")
            if method.doc:
                methods.append(method)
    return _Entry(
        kind="class",
        name=name,
        signature=_signature(cls),
        doc=_clean(inspect.getdoc(cls) or ""),
        methods=tuple(methods),
    )


def _function_entry(name: str, func: Callable[..., Any], kind: str) -> _Entry:
    return _Entry(kind=kind, name=name, signature=_signature(func), doc=_clean(func.__doc__ or ""))


def _signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", text)


def _clean(doc: str) -> str:
    text = _ADDRESS.sub("", inspect.cleandoc(doc)).strip()
    if len(text) > _MAX_DOC_CHARS:
        cut = text.rfind("\n\n", 0, _MAX_DOC_CHARS)
        text = text[: cut if cut > 0 else _MAX_DOC_CHARS].rstrip()
    return text


def _vary(doc: _Doc, variant: int, seed: int) -> _Doc:
    # A distinct copy: a note naming the edition and a reordering of the entries, so the file's
    # content hash and its chunk boundaries differ from the original while the material is alike.
    rng = random.Random(f"{seed}:{doc.module}:{variant}")
    entries = list(doc.entries)
    rng.shuffle(entries)
    note = (
        f"Edition {variant} of the notes on {doc.module}. "
        f"This copy lists {len(entries)} entries in a different order."
    )
    return _Doc(
        module=doc.module,
        title=f"{doc.title} (edition {variant})",
        summary=f"{note}\n\n{doc.summary}",
        entries=tuple(entries),
    )


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


def _walk(doc: _Doc) -> Iterator[tuple[int, str, _Entry]]:
    """Headings in document order: (level, heading text, entry)."""
    for entry in doc.entries:
        prefix = "class " if entry.kind == "class" else ""
        yield 2, f"{prefix}{entry.name}{entry.signature}", entry
        for method in entry.methods:
            yield 3, f"{method.name}{method.signature}", method


# ---------------------------------------------------------------- renderers


def _render_txt(doc: _Doc) -> bytes:
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


def _render_md(doc: _Doc) -> bytes:
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


def _render_html(doc: _Doc) -> bytes:
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


def _render_pdf(doc: _Doc) -> bytes:
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


def _render_docx(doc: _Doc) -> bytes:
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


_RENDERERS: dict[str, Callable[[_Doc], bytes]] = {
    "txt": _render_txt,
    "md": _render_md,
    "html": _render_html,
    "pdf": _render_pdf,
    "docx": _render_docx,
}

_FORMAT_LIBRARY = {"pdf": "reportlab", "docx": "docx"}


def _format_available(fmt: str) -> bool:
    library = _FORMAT_LIBRARY.get(fmt)
    if library is None:
        return True
    try:
        importlib.import_module(library)
    except ImportError:
        logger.warning("skipping %s files: the %r package is not installed", fmt, library)
        return False
    return True


__all__ = ["FORMATS", "CorpusInfo", "build_sample_corpus"]
