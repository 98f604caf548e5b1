"""Stored contexts of the served LLM: ``POST /v1/contexts``, ``GET /v1/contexts[/{id}]``, ``DELETE``.

A context is a text or the beginning of a chat whose KV cache is computed once and kept on disk.
Any later prompt whose tokens start the same way reuses it (the longest stored prefix); naming it
in a request's ``context`` field puts it before that request's prompt.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import ConfigError
from .._llm import Job
from .._llm_schemas import ContextRequest
from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ._llm_common import (
    ClientGone,
    check_length,
    context_payload,
    llm_service,
    off_loop,
    outcome,
    stored_context,
)

router = APIRouter()


@router.post("/v1/contexts", status_code=201)
async def create_context(body: ContextRequest, request: Request) -> Response:
    llm = llm_service(request)
    engine = llm.engine
    origin: dict[str, Any]
    try:
        if body.messages is not None:
            messages = [m.as_template() for m in body.messages]
            chars = sum(len(m["content"]) for m in messages)
            ids = await off_loop(engine.chat_ids, messages, False, chars=chars)
            origin = {"messages": messages}
        else:
            assert body.text is not None
            ids = await off_loop(engine.text_ids, body.text, chars=len(body.text))
            origin = {"text": body.text}
    except ConfigError as exc:
        raise APIError(400, str(exc), param="messages") from exc
    # The context must leave room for at least one token after it.
    check_length(llm, ids, "messages" if body.messages is not None else "text")

    def work(job: Job) -> Any:
        return engine.create_context(ids, origin)

    try:
        found = await outcome(llm.submit(work), request)
    except ClientGone:
        return Response(status_code=499)
    except ConfigError as exc:  # larger than the whole disk budget
        raise APIError(400, str(exc), code="context_too_large") from exc
    return JSONResponse(context_payload(found), status_code=201)


@router.get("/v1/contexts")
async def list_contexts(request: Request) -> JSONResponse:
    store = llm_service(request).engine.store
    return JSONResponse(
        {
            "object": "list",
            "data": [context_payload(c) for c in store.contexts()],
            "used_bytes": store.used_bytes,
            "budget_bytes": store.budget_bytes,
        }
    )


@router.get("/v1/contexts/{context_id}")
async def get_context(context_id: str, request: Request) -> JSONResponse:
    return JSONResponse(context_payload(stored_context(llm_service(request), context_id)))


@router.delete("/v1/contexts/{context_id}")
async def delete_context(context_id: str, request: Request) -> JSONResponse:
    llm = llm_service(request)
    stored_context(llm, context_id)  # 404 when unknown
    deleted = await anyio.to_thread.run_sync(llm.engine.store.delete, context_id)
    return JSONResponse({"id": context_id, "object": "context.deleted", "deleted": bool(deleted)})
