"""Pure ASGI middleware: request metrics, the bearer API key and the request body limit.

Written as plain ASGI callables rather than ``BaseHTTPMiddleware``: no extra task per request and
no buffering of streamed bodies.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import error_body
from .metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes anyone may reach even when an API key is set: probes and the page's own files.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete JSON response (``body`` already serialised) on a raw ASGI ``send``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_json(send, status, json.dumps(error_body(status, message)).encode(), headers)


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Counts and times every request, checks the API key, and refuses oversized bodies (413).

    The body limit is checked twice: on ``Content-Length`` before anything is read, and while a
    body without a length (chunked) is streamed in, so a client cannot get past it by lying.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, api_key: str | None, max_body_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: Scope) -> bool:
        if self.api_key is None:
            return True
        path: str = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and secrets.compare_digest(
                    token.strip(), self.api_key
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
            await send(message)

        try:
            if not self._authorized(scope):
                self.metrics.rejected.labels("auth").inc()
                await _send_error(
                    send_wrapper,
                    401,
                    "a valid API key is required: send 'Authorization: Bearer <key>'",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            length = None
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = None
            if length is not None and length > self.max_body_bytes:
                self.metrics.rejected.labels("body_size").inc()
                await _send_error(
                    send_wrapper,
                    413,
                    f"request body of {length} bytes exceeds the limit of {self.max_body_bytes}",
                )
                return
            await self._call_limited(scope, receive, send_wrapper, status_holder)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(
                label, scope.get("method", ""), str(status_holder["status"])
            ).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def _call_limited(
        self, scope: Scope, receive: Receive, send: Send, status_holder: dict[str, Any]
    ) -> None:
        seen = 0
        too_large = False

        async def receive_wrapper() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        swallowed = False

        async def send_wrapper(message: Message) -> None:
            # The app may turn the read error into its own answer (FastAPI answers 400): replace it.
            nonlocal swallowed
            if too_large:
                if message["type"] == "http.response.start" and not swallowed:
                    swallowed = True
                    self.metrics.rejected.labels("body_size").inc()
                    await _send_error(
                        send, 413, f"request body exceeds the limit of {self.max_body_bytes} bytes"
                    )
                return
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge:
            if not status_holder["started"]:
                self.metrics.rejected.labels("body_size").inc()
                await _send_error(
                    send, 413, f"request body exceeds the limit of {self.max_body_bytes} bytes"
                )


__all__ = ["PUBLIC_PATHS", "GuardMiddleware"]
