"""The parser protocol and an immutable registry of parsers by format."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import ParseError, UnsupportedFormatError, VectorstreamError
from ..types import Section, Source
from ._cut import split_text
from ._detect import _ext, _name, detect_format
from ._options import ParseOptions
from ._read import read_head

Warn = Callable[[str], None]

logger = logging.getLogger("vectorstream.parsers")


@runtime_checkable
class Parser(Protocol):
    """Turns one source into sections, yielding them as it reads.

    ``warn`` receives human-readable messages about recoverable problems (replaced bytes,
    skipped rows). Sections need not be numbered: :meth:`ParserRegistry.parse` sets ``index``,
    adds ``metadata["format"]``, drops blank sections and cuts oversized ones. Raise
    :class:`~vectorstream.errors.ParseError` for unreadable input; other exceptions are wrapped.
    Parsers must pickle (the pipeline runs them in worker processes): a frozen dataclass or an
    instance of a module-level class is the easy way.
    """

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]: ...


def _log_warning(message: str) -> None:
    logger.warning("%s", message)


def _extension(ext: str) -> str:
    ext = ext.strip().lower()
    if not ext or ext in (".", "*"):
        raise ValueError(f"not a file extension: {ext!r}")
    return ext if ext.startswith(".") else "." + ext


def _media_type(media_type: str) -> str:
    """``"Text/X-Org; charset=utf-8"`` → ``"text/x-org"``."""
    return media_type.split(";", 1)[0].strip().lower()


def _qualified(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class ParserRegistry:
    """Parsers by format name, with extension and media-type rules for formats detection misses.

    Immutable: :meth:`with_parser` returns a new registry, so a customised registry can be handed
    to worker processes (it pickles when its parsers do) and the default one can never be changed
    behind anyone's back.
    """

    parsers: tuple[tuple[str, Parser], ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()  # (".org", "org")
    media_types: tuple[tuple[str, str], ...] = ()  # ("text/x-org", "org")

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parsers)

    @property
    def extension_map(self) -> Mapping[str, str]:
        return dict(self.extensions)

    @property
    def media_type_map(self) -> Mapping[str, str]:
        return dict(self.media_types)

    @property
    def key(self) -> str:
        """A stable description of what this registry does (format → parser class, rules).

        Pipelines put it in the settings part of the manifest key, so swapping a parser makes
        the files it handles count as changed. It names classes, not instances: a parser whose
        behaviour depends on its own settings should be a dataclass, whose ``repr`` is used.
        """
        parts = [
            f"{name}={repr(p) if dataclasses.is_dataclass(p) else _qualified(p)}"
            for name, p in self.parsers
        ]
        parts += [f"{e}->{f}" for e, f in self.extensions]
        parts += [f"{m}->{f}" for m, f in self.media_types]
        return ";".join(parts)

    def detect(self, source: Source, head: bytes) -> str:
        """The format of ``source``: this registry's extension rules, then its media-type rules
        (``Source.media_type``), then content detection (:func:`detect_format`)."""
        if self.extensions:
            by_ext = self.extension_map.get(_ext(_name(source)))
            if by_ext is not None:
                return by_ext
        if self.media_types and source.media_type:
            by_media = self.media_type_map.get(_media_type(source.media_type))
            if by_media is not None:
                return by_media
        return detect_format(source, head)

    def get(self, fmt: str) -> Parser:
        for name, parser in self.parsers:
            if name == fmt:
                return parser
        raise UnsupportedFormatError(
            f"no parser for format {fmt!r}; known formats: {', '.join(sorted(self.formats))}"
        )

    def with_parser(
        self,
        fmt: str,
        parser: Parser,
        *,
        extensions: tuple[str, ...] = (),
        media_types: tuple[str, ...] = (),
    ) -> ParserRegistry:
        """A copy with ``parser`` handling ``fmt`` (replacing any previous one).

        ``extensions`` (``".epub"``) route files with those names to ``fmt`` before any
        content-based detection; ``media_types`` (``"application/epub+zip"``) do the same for
        sources whose ``media_type`` says so (an HTTP ``Content-Type``, an upload's type).
        """
        if not isinstance(fmt, str) or not fmt.strip():
            raise ValueError(f"a format name is a non-empty string, got {fmt!r}")
        if not isinstance(parser, Parser):
            raise TypeError(f"{parser!r} has no parse(source, options, warn) method")
        if isinstance(extensions, str) or isinstance(media_types, str):
            raise TypeError("extensions and media_types are tuples of strings, not one string")
        exts = tuple(_extension(e) for e in extensions)
        types = tuple(_media_type(m) for m in media_types)
        if any("/" not in m for m in types):
            raise ValueError(f"media types look like 'type/subtype', got {media_types!r}")
        return ParserRegistry(
            parsers=(*((n, p) for n, p in self.parsers if n != fmt), (fmt, parser)),
            extensions=(
                *((e, f) for e, f in self.extensions if e not in exts),
                *((e, fmt) for e in exts),
            ),
            media_types=(
                *((m, f) for m, f in self.media_types if m not in types),
                *((m, fmt) for m in types),
            ),
        )

    def parse(
        self,
        source: Source,
        options: ParseOptions = ParseOptions(),
        on_warning: Warn | None = None,
        *,
        format: str | None = None,
    ) -> Iterator[Section]:
        """Stream the sections of ``source`` with this registry's parsers.

        The format is detected (see :meth:`detect`) unless ``format`` names it. ``on_warning``
        receives recoverable problems (replaced bytes, skipped rows, pages without text); by
        default they are logged. An empty source yields nothing. Raises
        :class:`~vectorstream.errors.ParseError` when the source cannot be read or parsed.
        """
        warn = on_warning or _log_warning
        fmt = format or "unknown"
        limit = options.max_section_chars
        try:
            if format is None:
                fmt = self.detect(source, read_head(source))
            parser = self.get(fmt)
            index = 0
            # Offsets into the document text: every character a parser produced counts, so for
            # text, markdown and code they are offsets into the file's decoded text. Blank text is
            # not a section of its own; it goes in front of the next one (up to ``limit``
            # characters; a longer blank run leaves a gap of whitespace that no section covers).
            offset = 0
            blank = ""
            for section in parser.parse(source, options, warn):
                if section.image is None and not section.text.strip():
                    blank, offset = _carry(blank, section.text, offset, limit)
                    continue
                metadata = {"format": fmt, **section.metadata}
                metadata["format"] = fmt
                for text in split_text(section.text, limit):
                    if section.image is None and not text.strip():
                        blank, offset = _carry(blank, text, offset, limit)
                        continue
                    if blank and section.image is None:
                        text, blank = blank + text, ""
                    yield dataclasses.replace(
                        section,
                        text=text,
                        source=source.uri,
                        index=index,
                        metadata=metadata,
                        start=offset,
                    )
                    index += 1
                    offset += len(text)
        except VectorstreamError:
            raise
        except MemoryError as exc:
            raise ParseError(f"{source.uri}: too large to parse as {fmt} in memory") from exc
        except RecursionError as exc:
            raise ParseError(f"{source.uri}: nested too deeply to parse as {fmt}") from exc
        except OSError as exc:
            raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # the boundary: no vendor exception leaves a parser untranslated
            raise ParseError(
                f"{source.uri}: cannot parse as {fmt}: {type(exc).__name__}: {exc}"
            ) from exc


def _carry(blank: str, text: str, offset: int, limit: int) -> tuple[str, int]:
    """Blank ``text`` kept to go in front of the next section: only its last ``limit``
    characters (``offset`` moves past the rest), so a section grows by at most that much."""
    joined = blank + text
    if len(joined) <= limit:
        return joined, offset
    skipped = len(joined) - limit
    return joined[skipped:], offset + skipped


def document_text(sections: Iterable[Section]) -> str:
    """The document text that chunk offsets point into, rebuilt from a source's sections.

    Each section's text is placed at its ``start``; a gap (a run of blank text longer than the
    parser's section bound) is filled with spaces. For text, markdown and code this is the file's
    decoded text up to such gaps.
    """
    parts: list[str] = []
    at = 0
    for section in sections:
        if section.start < at:
            raise ValueError(
                f"section {section.index} starts at {section.start}, inside the text before it "
                f"(which ends at {at})"
            )
        if section.start > at:
            parts.append(" " * (section.start - at))
        parts.append(section.text)
        at = section.start + len(section.text)
    return "".join(parts)


__all__ = ["Parser", "ParserRegistry", "Warn", "document_text"]
