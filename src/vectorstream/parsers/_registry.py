"""The parser protocol and an immutable registry of parsers by format."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import UnsupportedFormatError
from ..types import Section, Source
from ._detect import detect_format
from ._options import ParseOptions

Warn = Callable[[str], None]


@runtime_checkable
class Parser(Protocol):
    """Turns one source into sections, yielding them as it reads.

    ``warn`` receives human-readable messages about recoverable problems (replaced bytes,
    skipped rows). Sections need not be numbered: :func:`~vectorstream.parsers.parse` sets
    ``index``, adds ``metadata["format"]``, drops blank sections and cuts oversized ones. Raise
    :class:`~vectorstream.errors.ParseError` for unreadable input; other exceptions are wrapped.
    Parsers must pickle (the pipeline runs them in worker processes): a frozen dataclass or a
    module-level object is the easy way.
    """

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]: ...


@dataclass(frozen=True, slots=True)
class ParserRegistry:
    """Parsers by format name, plus extension rules for formats that detection cannot know.

    Immutable: :meth:`with_parser` returns a new registry, so a customised registry can be handed
    to worker processes and the default one can never be changed behind anyone's back.
    """

    parsers: tuple[tuple[str, Parser], ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parsers)

    @property
    def extension_map(self) -> Mapping[str, str]:
        return dict(self.extensions)

    def detect(self, source: Source, head: bytes) -> str:
        """The format of ``source``: this registry's extension rules, then content detection."""
        return detect_format(source, head, extensions=self.extension_map)

    def get(self, fmt: str) -> Parser:
        for name, parser in self.parsers:
            if name == fmt:
                return parser
        raise UnsupportedFormatError(
            f"no parser for format {fmt!r}; known formats: {', '.join(sorted(self.formats))}"
        )

    def with_parser(
        self, fmt: str, parser: Parser, *, extensions: tuple[str, ...] = ()
    ) -> ParserRegistry:
        """A copy with ``parser`` handling ``fmt`` (replacing any previous one).

        ``extensions`` (``".epub"``) route files with those names to ``fmt`` before any
        content-based detection.
        """
        if not isinstance(parser, Parser):
            raise TypeError(f"{parser!r} has no parse(source, options, warn) method")
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        return ParserRegistry(
            parsers=(*((n, p) for n, p in self.parsers if n != fmt), (fmt, parser)),
            extensions=(
                *((e, f) for e, f in self.extensions if e not in exts),
                *((e, fmt) for e in exts),
            ),
        )


__all__ = ["Parser", "ParserRegistry", "Warn"]
