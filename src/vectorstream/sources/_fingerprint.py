"""Content hashes of sources, for the manifest (was this exact content embedded already?)."""

from __future__ import annotations

import hashlib

from ..errors import ParseError
from ..types import Source

_BLOCK = 1 << 20  # read files a MiB at a time: constant memory whatever the file size
_TEXT_SLICE = 1 << 18  # characters encoded at a time, so a huge text is never copied whole


def fingerprint(source: Source) -> str:
    """Return the hex BLAKE2b-128 digest of the source's content (bytes, text or file).

    A text is hashed as its UTF-8 bytes, so a file and an in-memory text with the same content
    share a fingerprint. Raises :class:`~vectorstream.errors.ParseError` if the file cannot be
    read.
    """
    h = hashlib.blake2b(digest_size=16)
    if source.data is not None:
        h.update(source.data)
    elif source.text is not None:
        text = source.text
        for i in range(0, len(text), _TEXT_SLICE):
            h.update(text[i : i + _TEXT_SLICE].encode("utf-8", "surrogatepass"))
    elif source.path is not None:
        try:
            with open(source.path, "rb") as fh:
                while block := fh.read(_BLOCK):
                    h.update(block)
        except OSError as exc:
            raise ParseError(f"{source.uri}: cannot read: {exc.strerror or exc}") from exc
    else:
        raise ParseError(f"{source.uri}: source has no path, text or data to fingerprint")
    return h.hexdigest()


__all__ = ["fingerprint"]
