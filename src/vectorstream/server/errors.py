"""Errors as HTTP answers, in OpenAI's error shape for every route.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": null}}

OpenAI clients parse this shape; other clients get the same, so there is one error format to learn.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ChunkingError,
    ConfigError,
    ModelError,
    ParseError,
    StoreError,
    StoreUnavailableError,
    VectorstreamError,
)
from .batcher import BatcherClosedError, QueueFullError

log = logging.getLogger("vectorstream.server.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error the service answers on purpose, with its status, message and offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def body_validation_error(exc: ValidationError) -> RequestValidationError:
    """A pydantic error from validating a body by hand, located like FastAPI locates its own."""
    errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
    return RequestValidationError(errors)


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, param, code), status_code=status, headers=headers
    )


def validation_body(errors: list[Any]) -> dict[str, Any]:
    """A 422 answer for pydantic errors located as FastAPI locates them (``("body", ...)``)."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):  # FastAPI's "where it came from"
        loc = loc[1:]
    where = ".".join(loc) or None
    message = (
        f"{where}: {first.get('msg', 'invalid request')}"
        if where
        else str(first.get("msg", "invalid request"))
    )
    body = error_body(422, message, where, "validation_error")
    body["detail"] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return body


def answer_for(exc: Exception, retry_after_s: int) -> JSONResponse:
    """The service's answer to an exception a route raised: one mapping for every path.

    FastAPI's exception handlers and the lean embeddings path both call this.
    """
    retry = {"Retry-After": str(retry_after_s)}
    if isinstance(exc, APIError):
        return error_response(
            exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers
        )
    if isinstance(exc, RequestValidationError):
        return JSONResponse(validation_body(list(exc.errors())), status_code=422)
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    if isinstance(exc, QueueFullError):
        return error_response(503, f"the service is busy: {exc}", code="queue_full", headers=retry)
    if isinstance(exc, BatcherClosedError):
        return error_response(503, str(exc), code="shutting_down", headers=retry)
    if isinstance(exc, ChunkingError):  # a ConfigError: checked first to name the parameter
        return error_response(400, str(exc), param="chunking")
    if isinstance(exc, ConfigError):
        return error_response(400, str(exc))
    if isinstance(exc, ParseError):
        return error_response(400, f"cannot parse the upload: {exc}", param="files")
    if isinstance(exc, StoreUnavailableError):
        return error_response(503, f"the store is unavailable: {exc}", code="store_unavailable")
    if isinstance(exc, StoreError):
        return error_response(500, f"store error: {exc}", code="store_error")
    if isinstance(exc, ModelError):
        return error_response(500, f"model error: {exc}", code="model_error")
    if isinstance(exc, VectorstreamError):
        log.exception("unhandled library error", exc_info=exc)
        return error_response(500, f"{type(exc).__name__}: {exc}")
    # A bug, not a refusal: answer in the one error shape (the traceback goes to the log).
    return error_response(500, f"internal error ({type(exc).__name__}); see the service log")


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Map our exceptions, FastAPI's validation errors and plain HTTP errors to the one shape."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, QueueFullError):
            request.app.state.metrics.rejected.labels("queue_full").inc()
        return answer_for(exc, retry_after_s)

    for kind in (
        APIError,
        RequestValidationError,
        StarletteHTTPException,
        QueueFullError,
        BatcherClosedError,
        ChunkingError,
        ConfigError,
        ParseError,
        StoreUnavailableError,
        StoreError,
        ModelError,
        VectorstreamError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)


__all__ = [
    "APIError",
    "answer_for",
    "body_validation_error",
    "error_body",
    "error_response",
    "install_error_handlers",
    "validation_body",
]
