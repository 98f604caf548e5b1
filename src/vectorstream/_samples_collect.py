"""The material of the sample corpus: standard-library modules documented from their docstrings.

Each chosen module's docstrings (module, classes, methods, functions, read with :mod:`inspect`)
become a ``Doc``: a title, a summary and a list of entries, capped so one document is a few
thousand tokens. Memory addresses are scrubbed from signatures and docstrings, so the material is
the same on every run of a given Python. ``vary`` makes a distinct edition of a document for
corpora larger than the module list.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import random
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

logger = logging.getLogger("vectorstream.samples")

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


@dataclass(frozen=True, slots=True)
class Entry:
    """One documented object: a class (with methods) or a function."""

    kind: str
    name: str
    signature: str
    doc: str
    methods: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Doc:
    """One module's documentation, ready to render in any format."""

    module: str
    title: str
    summary: str
    entries: tuple[Entry, ...]


def load_docs(seed: int) -> list[Doc]:
    """The documented modules, in an order drawn from ``seed`` (those that fail are skipped)."""
    order = list(_CANDIDATE_MODULES)
    random.Random(seed).shuffle(order)
    docs: list[Doc] = []
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


def _document_module(module: ModuleType) -> Doc:
    entries: list[Entry] = []
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
    return Doc(
        module=module.__name__,
        title=f"{module.__name__}: {summary.splitlines()[0] if summary else ''}".rstrip(": "),
        summary=summary,
        entries=tuple(entries),
    )


def _class_entry(name: str, cls: type) -> Entry:
    methods: list[Entry] = []
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_") or len(methods) >= _MAX_METHODS:
            continue
        if inspect.isfunction(value):
            method = _function_entry(f"{name}.{attr}", value, "method")
            if method.doc:
                methods.append(method)
    return Entry(
        kind="class",
        name=name,
        signature=_signature(cls),
        doc=_clean(inspect.getdoc(cls) or ""),
        methods=tuple(methods),
    )


def _function_entry(name: str, func: Callable[..., Any], kind: str) -> Entry:
    return Entry(kind=kind, name=name, signature=_signature(func), doc=_clean(func.__doc__ or ""))


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


def vary(doc: Doc, variant: int, seed: int) -> Doc:
    # A distinct copy: a note naming the edition and a reordering of the entries, so the file's
    # content hash and its chunk boundaries differ from the original while the material is alike.
    rng = random.Random(f"{seed}:{doc.module}:{variant}")
    entries = list(doc.entries)
    rng.shuffle(entries)
    note = (
        f"Edition {variant} of the notes on {doc.module}. "
        f"This copy lists {len(entries)} entries in a different order."
    )
    return Doc(
        module=doc.module,
        title=f"{doc.title} (edition {variant})",
        summary=f"{note}\n\n{doc.summary}",
        entries=tuple(entries),
    )


__all__ = ["Doc", "Entry", "load_docs", "vary"]
