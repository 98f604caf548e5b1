"""Reading a source's bytes or text incrementally, with encoding detection.

Text comes out in pieces of about 64 KiB with newlines normalised to ``\\n``; undecodable bytes
become U+FFFD and are counted, and the count is reported once through ``warn``.
"""

from __future__ import annotations

import codecs
import io
import re
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import ParseError
from ..types import Source

HEAD_BYTES = 8192
_BLOCK = 1 << 16

# (BOM, codec) with UTF-32 before UTF-16: the UTF-32-LE BOM begins with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Replaced-byte counting. Codec error handlers are registered globally by name, so the count
# lives in a thread-local that is reset around each single ``decode`` call (which runs
# synchronously on one thread: interleaved generators cannot mix their counts).
_counter = threading.local()


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _counter.n = getattr(_counter, "n", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


codecs.register_error("vectorstream.count", _count_and_replace)


def read_error(source: Source, exc: OSError) -> ParseError:
    return ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}")


def open_binary(source: Source) -> BinaryIO:
    """Open the source's bytes for reading.

    In-memory content wins over the file, in the order ``data``, ``text``, ``path``: the same
    order :func:`~vectorstream.sources.fingerprint` hashes in, so the hash describes what is parsed.
    """
    if source.data is not None:
        return io.BytesIO(source.data)
    if source.text is not None:
        return io.BytesIO(source.text.encode("utf-8", "surrogatepass"))
    if source.path is not None:
        try:
            return open(source.path, "rb")
        except OSError as exc:
            raise read_error(source, exc) from exc
    raise ParseError(f"{source.uri}: source has no path, text or data")


def read_head(source: Source, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the source (UTF-8 for in-memory text), for detection."""
    if source.text is not None and source.data is None:
        return source.text[:size].encode("utf-8", "surrogatepass")[:size]
    with open_binary(source) as fh:
        try:
            return fh.read(size)
        except OSError as exc:
            raise read_error(source, exc) from exc


def bom_encoding(head: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return None


def utf16_without_bom(head: bytes) -> str | None:
    """Recognise BOM-less UTF-16 of mostly-ASCII text by its zero bytes at every other place."""
    sample = head[: len(head) - len(head) % 2]
    if len(sample) < 8:
        return None
    even = sample[0::2].count(0) / (len(sample) // 2)
    odd = sample[1::2].count(0) / (len(sample) // 2)
    if odd > 0.4 and even < 0.05:
        return "utf-16-le"
    if even > 0.4 and odd < 0.05:
        return "utf-16-be"
    return None


_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]+)""", re.I)
# Per the HTML standard, pages that declare Latin-1 or ASCII are decoded as windows-1252.
_HTML_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}


def _known(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def declared_charset(source: Source, *, html: bool = False) -> str | None:
    """The ``charset`` of the source's media type (an HTTP ``Content-Type``), if it is known."""
    if not source.media_type or ";" not in source.media_type:
        return None
    for param in source.media_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            declared = value.strip().strip("\"'").lower()
            if html:
                declared = _HTML_ALIASES.get(declared, declared)
            return _known(declared)
    return None


def guess_encoding(head: bytes, *, html: bool = False) -> str:
    """Pick an encoding for BOM-less bytes: declared (HTML), UTF-8, BOM-less UTF-16, or a guess."""
    if html:
        m = _META_CHARSET.search(head)
        if m:
            declared = m.group(1).decode("ascii").lower()
            found = _known(_HTML_ALIASES.get(declared, declared))
            if found is not None:
                return found
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(head):
            return "utf-8"  # the head merely cut a multi-byte character in two
    utf16 = utf16_without_bom(head)
    if utf16 is not None:
        return utf16
    # Invalid as UTF-8. If there are *valid* multi-byte sequences too, it is UTF-8 with some
    # corruption (replace and report); if there are none, a legacy 8-bit encoding is likelier.
    decoded = head.decode("utf-8", "replace")
    bad = decoded.count("\ufffd")
    good = sum(1 for c in decoded if c > "\x7f" and c != "\ufffd")
    if good and bad <= good * 4:
        return "utf-8"
    import charset_normalizer  # heavy-ish; only needed for legacy encodings

    matches = list(charset_normalizer.from_bytes(head))
    if not matches:
        return "utf-8"
    best = matches[0]
    # Short Western samples decode equally cleanly in several code pages and charset-normalizer
    # then picks one arbitrarily (cp1250 or hp_roman8 for French and Spanish, measured). Among
    # equally clean candidates prefer windows-1252, by far the commonest legacy encoding.
    tied = {m.encoding for m in matches if m.chaos <= best.chaos + 0.01}
    return "cp1252" if "cp1252" in tied else best.encoding


def iter_text(
    source: Source,
    warn: Callable[[str], None],
    *,
    encoding: str | None = None,
    html: bool = False,
) -> Iterator[str]:
    """Yield the source's text in pieces, newlines normalised, decoding bytes incrementally."""
    if source.text is not None and source.data is None:
        yield from _normalise_newlines(
            source.text[i : i + _BLOCK] for i in range(0, len(source.text), _BLOCK)
        )
        return
    with open_binary(source) as fh:
        try:
            # The first block, not just the detection head: a legacy encoding often shows only
            # after a long ASCII preamble (licence headers, tables of contents).
            head = fh.read(_BLOCK)
        except OSError as exc:
            raise read_error(source, exc) from exc
        bom = bom_encoding(head)
        if bom is not None:
            name, skip = bom
            head = head[skip:]
        else:
            name = (
                encoding or declared_charset(source, html=html) or guess_encoding(head, html=html)
            )
        decoder = codecs.getincrementaldecoder(name)(errors="vectorstream.count")
        replaced = 0

        def pieces() -> Iterator[str]:
            nonlocal replaced
            block = head
            first = True
            while True:
                _counter.n = 0
                text = decoder.decode(block, final=not block)
                replaced += _counter.n
                if first and replaced > max(16, len(block) // 4):
                    # Mostly undecodable: not text in any sense worth embedding.
                    raise ParseError(
                        f"{source.uri}: not text: {replaced:,} of the first {len(block):,} bytes "
                        f"do not decode as {name}"
                    )
                first = False
                if text:
                    yield text
                if not block:
                    return
                try:
                    block = fh.read(_BLOCK)
                except OSError as exc:
                    raise read_error(source, exc) from exc

        yield from _normalise_newlines(pieces())
    if replaced:
        warn(
            f"{source.uri}: {replaced} undecodable byte(s) replaced with U+FFFD (decoded as {name})"
        )


def _normalise_newlines(pieces: Iterator[str]) -> Iterator[str]:
    # A "\r\n" may straddle two pieces: hold a trailing "\r" back until the next piece.
    carry = ""
    for piece in pieces:
        piece = carry + piece
        carry = ""
        if piece.endswith("\r"):
            carry, piece = "\r", piece[:-1]
        if "\r" in piece:
            piece = piece.replace("\r\n", "\n").replace("\r", "\n")
        if piece:
            yield piece
    if carry:
        yield "\n"


def iter_lines(pieces: Iterator[str], max_len: int = _BLOCK) -> Iterator[tuple[str, bool]]:
    """Split text pieces into lines, each with its ``\\n``; a longer line comes in parts.

    Yields ``(text, starts_line)``: ``starts_line`` is False for the continuation parts of a
    line longer than ``max_len``, so a 5 MB line never has to be held whole.
    """
    pending: list[str] = []
    pending_len = 0
    at_start = True
    for piece in pieces:
        pos = 0
        while pos < len(piece):
            nl = piece.find("\n", pos)
            if nl < 0:
                pending.append(piece[pos:])
                pending_len += len(piece) - pos
                if pending_len >= max_len:
                    yield "".join(pending), at_start
                    pending, pending_len, at_start = [], 0, False
                break
            pending.append(piece[pos : nl + 1])
            yield "".join(pending), at_start
            pending, pending_len, at_start = [], 0, True
            pos = nl + 1
    if pending:
        yield "".join(pending), at_start


__all__ = [
    "HEAD_BYTES",
    "bom_encoding",
    "declared_charset",
    "guess_encoding",
    "iter_lines",
    "iter_text",
    "open_binary",
    "read_head",
    "utf16_without_bom",
]
