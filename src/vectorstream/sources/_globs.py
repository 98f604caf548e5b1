"""Glob patterns for include/exclude, with ``**`` spanning folders (``fnmatch`` has no ``**``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    # Translate by hand: ``*`` stays within one path segment, ``**`` crosses segments, ``?`` is one
    # character, ``[...]`` a class. ``glob.translate`` would do this but only exists from 3.13.
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    # "**/" matches zero or more whole folders.
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class GlobSet:
    """A set of glob patterns matched against a relative path (``/``-separated) and its name.

    A pattern without ``/`` matches the file or folder name at any depth (like ``.gitignore``);
    a pattern with ``/`` matches the whole path relative to the walked root. A leading ``/`` or
    ``./`` anchors nothing extra and is ignored.
    """

    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Sequence[str]) -> GlobSet:
        if isinstance(patterns, str):
            patterns = (patterns,)
        cleaned = []
        for p in patterns:
            p = p.replace("\\", "/").strip()
            while p.startswith("./"):
                p = p[2:]
            p = p.lstrip("/").rstrip("/")
            if p:
                cleaned.append(p)
        return cls(tuple(cleaned))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, relpath: str, name: str) -> bool:
        for p in self.patterns:
            rx = _compile(p)
            if "/" in p:
                if rx.match(relpath):
                    return True
            elif rx.match(name) or rx.match(relpath):
                return True
        return False


__all__ = ["GlobSet"]
