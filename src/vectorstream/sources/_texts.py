"""In-memory texts and path lists (stdin) as sources."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TextIO

from ..errors import ConfigError
from ..types import Source


def read_path_list(stream: TextIO) -> Iterator[str]:
    """Yield one path per line of ``stream`` (e.g. ``sys.stdin``), lazily; blank lines skipped.

    Only the line ending is removed: a file name may legitimately begin or end with spaces.
    """
    for line in stream:
        path = line.rstrip("\r\n")
        if path.strip():
            yield path


def from_texts(
    texts: Iterable[str] | Mapping[str, str], *, prefix: str = "text"
) -> Iterator[Source]:
    """Yield a :class:`Source` per in-memory text.

    With a mapping, its keys are the URIs; otherwise the URI is ``f"{prefix}:{index}"``.
    """
    if isinstance(texts, str | bytes):
        # Iterating a string would yield one source per character: surely a mistake.
        raise ConfigError("from_texts() takes an iterable of texts, not a single string")
    pairs: Iterable[tuple[str, object]]
    if isinstance(texts, Mapping):
        pairs = ((str(k), v) for k, v in texts.items())
    else:
        pairs = ((f"{prefix}:{i}", t) for i, t in enumerate(texts))
    for uri, text in pairs:
        if not isinstance(text, str):
            raise ConfigError(f"text {uri!r} is a {type(text).__name__}, expected str")
        yield Source(uri=uri, text=text, size=len(text.encode("utf-8", "surrogatepass")))


__all__ = ["from_texts", "read_path_list"]
