"""Recognising a source's format from its content first and its name second."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType

from ..types import Source
from ._read import bom_encoding, utf16_without_bom

#: Every format :func:`detect_format` can return.
FORMATS: tuple[str, ...] = (
    "text",
    "markdown",
    "html",
    "pdf",
    "docx",
    "csv",
    "jsonl",
    "code",
    "image",
    "binary",
)

#: File extension -> programming language, for the ``code`` format.
CODE_LANGUAGES: Mapping[str, str] = MappingProxyType(
    {
        ".py": "python",
        ".pyi": "python",
        ".js": "javascript",
        ".mjs": "javascript",
        ".cjs": "javascript",
        ".jsx": "javascript",
        ".ts": "typescript",
        ".tsx": "typescript",
        ".java": "java",
        ".kt": "kotlin",
        ".kts": "kotlin",
        ".scala": "scala",
        ".c": "c",
        ".h": "c",
        ".cc": "cpp",
        ".cpp": "cpp",
        ".cxx": "cpp",
        ".hpp": "cpp",
        ".hh": "cpp",
        ".cs": "csharp",
        ".go": "go",
        ".rs": "rust",
        ".rb": "ruby",
        ".php": "php",
        ".swift": "swift",
        ".m": "objective-c",
        ".lua": "lua",
        ".pl": "perl",
        ".pm": "perl",
        ".r": "r",
        ".jl": "julia",
        ".hs": "haskell",
        ".ml": "ocaml",
        ".ex": "elixir",
        ".exs": "elixir",
        ".erl": "erlang",
        ".clj": "clojure",
        ".dart": "dart",
        ".zig": "zig",
        ".sh": "shell",
        ".bash": "shell",
        ".zsh": "shell",
        ".fish": "shell",
        ".ps1": "powershell",
        ".sql": "sql",
        ".css": "css",
        ".scss": "scss",
        ".sass": "sass",
        ".less": "less",
        ".vue": "vue",
        ".svelte": "svelte",
        ".json": "json",
        ".yaml": "yaml",
        ".yml": "yaml",
        ".toml": "toml",
        ".ini": "ini",
        ".cfg": "ini",
        ".xml": "xml",
        ".proto": "protobuf",
        ".graphql": "graphql",
        ".tf": "terraform",
        ".cmake": "cmake",
        ".gradle": "groovy",
        ".groovy": "groovy",
        ".f90": "fortran",
        ".asm": "assembly",
        ".s": "assembly",
    }
)

#: Extension-less file names that are code.
CODE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "makefile": "make",
        "gnumakefile": "make",
        "dockerfile": "dockerfile",
        "cmakelists.txt": "cmake",
        "rakefile": "ruby",
        "gemfile": "ruby",
        "justfile": "just",
    }
)

_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        ".txt": "text",
        ".text": "text",
        ".rst": "text",
        ".log": "text",
        ".adoc": "text",
        ".org": "text",
        ".tex": "text",
        ".md": "markdown",
        ".markdown": "markdown",
        ".mdown": "markdown",
        ".mkd": "markdown",
        ".mdx": "markdown",
        ".html": "html",
        ".htm": "html",
        ".xhtml": "html",
        ".shtml": "html",
        ".pdf": "pdf",
        ".docx": "docx",
        ".csv": "csv",
        ".tsv": "csv",
        ".tab": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".jsonlines": "jsonl",
        ".png": "image",
        ".jpg": "image",
        ".jpeg": "image",
        ".gif": "image",
        ".webp": "image",
        ".bmp": "image",
        ".tif": "image",
        ".tiff": "image",
        ".ico": "image",
        ".heic": "image",
        ".avif": "image",
        ".svg": "image",
        # Containers and binaries we have no parser for, so they are not mistaken for text.
        ".doc": "binary",
        ".xls": "binary",
        ".xlsx": "binary",
        ".ppt": "binary",
        ".pptx": "binary",
        ".odt": "binary",
        ".zip": "binary",
        ".gz": "binary",
        ".tar": "binary",
        ".exe": "binary",
        ".so": "binary",
        ".dll": "binary",
        ".bin": "binary",
        ".pyc": "binary",
        ".whl": "binary",
        ".jar": "binary",
        ".class": "binary",
        ".mp3": "binary",
        ".mp4": "binary",
        ".wav": "binary",
        ".avi": "binary",
        ".mov": "binary",
        ".sqlite": "binary",
        ".db": "binary",
    }
)

_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "text/plain": "text",
        "text/markdown": "markdown",
        "text/x-markdown": "markdown",
        "text/html": "html",
        "application/xhtml+xml": "html",
        "application/pdf": "pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
        "text/csv": "csv",
        "text/tab-separated-values": "csv",
        "application/jsonl": "jsonl",
        "application/x-ndjson": "jsonl",
        "application/jsonlines": "jsonl",
    }
)

# Magic numbers: (prefix, format). Images first; "binary" entries are formats we cannot read.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
    (b"BM", "image-bmp"),
    (b"II*\x00", "image"),
    (b"MM\x00*", "image"),
    (b"\x00\x00\x01\x00", "image"),
    (b"\x7fELF", "binary"),
    (b"\x1f\x8b", "binary"),
    (b"BZh", "binary"),
    (b"\xfd7zXZ\x00", "binary"),
    (b"7z\xbc\xaf\x27\x1c", "binary"),
    (b"Rar!", "binary"),
    (b"MZ", "binary-mz"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "binary"),  # OLE2: .doc, .xls
    (b"SQLite format 3\x00", "binary"),
)

_HTML_START = re.compile(
    rb"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_SHEBANG = re.compile(rb"#!\s*(?:/usr)?(?:/local)?/bin/(?:env\s+)?([A-Za-z0-9_.-]+)")
_SHEBANG_LANG = {
    "python": "python",
    "python3": "python",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "node": "javascript",
    "ruby": "ruby",
    "perl": "perl",
    "php": "php",
    "lua": "lua",
    "deno": "typescript",
}


def _name(source: Source) -> str:
    # A path wins; otherwise the URI's last segment may still carry a name (e.g. a URL).
    raw = source.path or source.uri.split("?", 1)[0].split("#", 1)[0]
    return os.path.basename(raw.rstrip("/\\")).lower()


def _ext(name: str) -> str:
    _, ext = os.path.splitext(name)
    return ext


def _magic(head: bytes) -> str | None:
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "image"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    for prefix, fmt in _MAGIC:
        if head.startswith(prefix):
            # Two-letter magics ("BM", "MZ") also begin ordinary words: demand more evidence.
            if fmt == "image-bmp":
                return "image" if len(head) >= 26 and head[14] in (12, 40, 56, 108, 124) else None
            if fmt == "binary-mz":
                return "binary" if b"\x00" in head[:64] else None
            return fmt
    return None


def looks_binary(head: bytes) -> bool:
    """True for bytes that are not text in any encoding we would try (NULs, control bytes)."""
    if not head or bom_encoding(head) is not None or utf16_without_bom(head) is not None:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 0x20 and b not in (9, 10, 12, 13, 27, 8))
    return controls > len(head) * 0.05


def looks_html(head: bytes) -> bool:
    bom = bom_encoding(head)
    if bom is not None:
        name, skip = bom
        head = head[skip:].decode(name, "replace").encode("utf-8", "replace")
    return _HTML_START.match(head) is not None


def code_language(source: Source, head: bytes = b"") -> str:
    """The programming language of a code source, from its name or ``#!`` line."""
    name = _name(source)
    lang = CODE_LANGUAGES.get(_ext(name)) or CODE_NAMES.get(name)
    if lang is None:
        m = _SHEBANG.match(head)
        if m:
            interpreter = m.group(1).decode("ascii", "replace")
            lang = _SHEBANG_LANG.get(
                interpreter, _SHEBANG_LANG.get(interpreter.rstrip("0123456789."), interpreter)
            )
    return lang or "text"


def claimed_format(source: Source) -> str | None:
    """The format the source's name (or media type) claims, ignoring its content."""
    claimed = _MEDIA_TYPES.get((source.media_type or "").split(";", 1)[0].strip().lower())
    if claimed is None:
        name = _name(source)
        ext = _ext(name)
        claimed = _EXTENSIONS.get(ext)
        if claimed is None and (ext in CODE_LANGUAGES or name in CODE_NAMES):
            claimed = "code"
    return claimed


def detect_format(
    source: Source, head: bytes, *, extensions: Mapping[str, str] | None = None
) -> str:
    """Return the format of a source, one of :data:`FORMATS` (or one named in ``extensions``).

    ``head`` is the first bytes of the source (8 KiB is plenty). Content wins over the name: a
    ``.pdf`` holding HTML is ``"html"``, random bytes named ``.txt`` are ``"binary"``, a PNG is
    ``"image"`` whatever it is called. ``extensions`` (``".ext" -> format``) adds or overrides
    name-based rules for custom parsers and is consulted first.
    """
    name = _name(source)
    ext = _ext(name)
    if extensions and ext in extensions:
        return extensions[ext]
    in_memory_text = source.text is not None and source.data is None
    magic = None if in_memory_text else _magic(head)
    if magic == "zip":
        # An Office Open XML document names its parts in the zip's local headers.
        return "docx" if (b"word/" in head or ext == ".docx") else "binary"
    if magic is not None:
        return magic
    if not in_memory_text and looks_binary(head):
        return "binary"
    claimed = claimed_format(source)
    if ext == ".svg" and not in_memory_text:
        return "image"
    if claimed in ("pdf", "docx", "image", "binary"):
        # The name promises a binary format but the bytes are text (no magic number matched):
        # trust the bytes.
        return "html" if looks_html(head) else "text"
    if claimed is not None:
        return claimed
    if looks_html(head):
        return "html"
    if _SHEBANG.match(head):
        return "code"
    return "text"


__all__ = [
    "CODE_LANGUAGES",
    "CODE_NAMES",
    "FORMATS",
    "claimed_format",
    "code_language",
    "detect_format",
    "looks_binary",
    "looks_html",
]
