"""A sample corpus built at run time from material already on the machine.

The demo, the tests and every benchmark need a realistic, mixed-format corpus without a network
and without checking documents into the repository. The Python standard library documents itself:
each chosen module's docstrings (module, classes, methods, functions, read with :mod:`inspect`)
are rendered as plain text, markdown, a real HTML page (head, nav, script and style that parsers
must drop), a multi-page PDF (reportlab) and a DOCX (python-docx: headings, paragraphs, a table).

The output is deterministic for a given seed on a given Python: memory addresses are scrubbed
from signatures, the PDF is written in reportlab's invariant mode and the DOCX zip entries get a
fixed timestamp, so two builds are byte-identical.

The material (modules documented from their docstrings) is collected by ``_samples_collect``
and rendered in each format by ``_samples_render``; this module lays the corpus out on disk.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ._samples_collect import load_docs, vary
from ._samples_render import RENDERERS
from .errors import ConfigError

logger = logging.getLogger("vectorstream.samples")

FORMATS: tuple[str, ...] = ("md", "html", "txt", "pdf", "docx")


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
    docs = load_docs(seed)
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
            text_doc = vary(doc, variant, seed) if variant else doc
            stem = doc.module.replace(".", "_")
            name = f"{i:04d}_{stem}" + (f"--v{variant}" if variant else "") + f".{fmt}"
            data = RENDERERS[fmt](text_doc)
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
