"""Web pages and files over HTTP(S) as sources, fetched one at a time with a size cap."""

from __future__ import annotations

import email.utils
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..types import Source
from ._problems import SourceProblem

logger = logging.getLogger("vectorstream.sources")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
USER_AGENT = "vectorstream/0.1 (+https://pypi.org/project/vectorstream/)"
_BLOCK = 1 << 16


def is_url(text: str) -> bool:
    """True for ``http://`` and ``https://`` addresses (what :func:`iter_urls` fetches)."""
    return text[:8].lower().startswith(("http://", "https://"))


class UrlFetch(Iterator[Source]):
    """An iterator of fetched :class:`Source` objects (``data`` holds the body) that records the
    URLs it could not fetch in ``problems``; one failed URL never stops the others."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        timeout: float = 30.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.problems: list[SourceProblem] = []
        self._urls = urls
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._gen = self._fetch_all()

    def __iter__(self) -> UrlFetch:
        return self

    def __next__(self) -> Source:
        return next(self._gen)

    def _problem(self, url: str, kind: str, reason: str) -> None:
        problem = SourceProblem(path=url, kind=kind, reason=reason)
        logger.warning("skipping %s", problem)
        self.problems.append(problem)

    def _fetch_all(self) -> Iterator[Source]:
        for url in self._urls:
            if not is_url(url):
                self._problem(url, "unsupported", "not an http:// or https:// URL")
                continue
            source = self._fetch(url)
            if source is not None:
                yield source

    def _fetch(self, url: str) -> Source | None:
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                data = _read_capped(response, self._max_bytes)
                if data is None:
                    self._problem(url, "too-large", f"larger than {self._max_bytes:,} bytes")
                    return None
                content_type = response.headers.get("Content-Type")
                modified = response.headers.get("Last-Modified")
                final_url = response.geturl()
        except urllib.error.HTTPError as exc:
            self._problem(url, "http-error", f"HTTP {exc.code} {exc.reason}")
            return None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason: Any = getattr(exc, "reason", None) or exc
            self._problem(url, "unreachable", str(reason))
            return None
        metadata = {"url": final_url} if final_url and final_url != url else {}
        return Source(
            uri=url,
            data=data,
            size=len(data),
            mtime_ns=_http_date_ns(modified),
            media_type=content_type,
            metadata=metadata,
        )


def _read_capped(response: Any, max_bytes: int) -> bytes | None:
    # Read in blocks and stop one byte past the cap: a lying or missing Content-Length cannot
    # make us hold more than ``max_bytes``.
    parts: list[bytes] = []
    size = 0
    while block := response.read(_BLOCK):
        parts.append(block)
        size += len(block)
        if size > max_bytes:
            return None
    return b"".join(parts)


def _http_date_ns(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp() * 1_000_000_000)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def iter_urls(
    urls: Iterable[str],
    *,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    headers: Mapping[str, str] | None = None,
) -> UrlFetch:
    """Fetch each URL (lazily, in order) into a :class:`Source` with the body in ``data``.

    ``uri`` is the URL as given (a redirect's final address goes to ``metadata["url"]``);
    ``media_type`` is the ``Content-Type`` header, whose ``charset`` the parsers honour;
    ``mtime_ns`` comes from ``Last-Modified``. Failures (HTTP errors, unreachable hosts, bodies
    over ``max_bytes``) are recorded in the returned fetch's ``problems``.
    """
    return UrlFetch(urls, timeout=timeout, max_bytes=max_bytes, headers=headers)


__all__ = ["DEFAULT_MAX_BYTES", "UrlFetch", "is_url", "iter_urls"]
