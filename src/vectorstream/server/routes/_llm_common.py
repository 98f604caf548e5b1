"""What the LLM routes share: reaching the served LLM, prompt checks, waiting for a job."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from fastapi import Request

from ...attention._serving import PromptTooLongError
from ...attention._store_index import StoredContext, UnknownContextError
from .._llm import Job, LLMService
from ..errors import APIError
from ._common import service

# A request whose client is gone is noticed within this many seconds (between two polls).
DISCONNECT_POLL_S = 0.25
# Prompts with more characters than this are tokenized off the event loop.
INLINE_CHARS = 4096


class ClientGone(Exception):
    """The client disconnected before the answer was ready; the job was cancelled."""


def llm_service(request: Request) -> LLMService:
    """The served LLM; 404 when the server was started without ``--llm``."""
    llm: LLMService | None = service(request).llm
    if llm is None:
        raise APIError(
            404,
            "this server serves no LLM; start it with --llm MODEL (see docs/llm.md)",
            code="llm_not_served",
        )
    return llm


def check_model(llm: LLMService, request: Request, name: str | None) -> None:
    """404 for a model name this server does not serve (None: the served one)."""
    if name is None:
        return
    spec = service(request).settings.llm or ""
    names = {llm.model_id, llm.model_id.lower(), spec, os.path.basename(os.path.normpath(spec))}
    if name not in names and name.lower() not in names:
        raise APIError(
            404,
            f"the model {name!r} is not served here; this server's LLM is {llm.model_id!r}",
            param="model",
            code="model_not_found",
        )


def stored_context(llm: LLMService, context_id: str) -> StoredContext:
    try:
        found: StoredContext = llm.engine.store.get(context_id)
    except UnknownContextError as exc:
        raise APIError(404, str(exc), param="context", code="context_not_found") from exc
    return found


async def off_loop(fn: Callable[..., Any], *args: Any, chars: int = 0) -> Any:
    """Run a tokenizer call on a thread when the text is long, else here (a hop costs more)."""
    if chars > INLINE_CHARS:
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


def check_length(llm: LLMService, ids: Sequence[int], param: str) -> None:
    try:
        llm.engine.check_prompt(len(ids))
    except PromptTooLongError as exc:
        raise APIError(400, str(exc), param=param, code="context_length_exceeded") from exc


async def outcome(job: Job, request: Request) -> Any:
    """The job's result (deltas skipped), cancelling it if the client disconnects first."""
    while True:
        try:
            kind, value = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel.set()
                raise ClientGone from None
            continue
        if kind == "done":
            return value
        if kind == "error":
            raise value


def usage(finished: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": finished.cached_tokens},
    }


def extension(finished: Any) -> dict[str, Any]:
    """This service's own report on a generation (ignored by OpenAI clients)."""
    return {
        "reused_context": finished.reused_context,
        "stored_context": finished.stored.id if finished.stored is not None else None,
        "time_to_first_token_s": round(finished.ttft_s, 4),
        "tokens_per_s": round(finished.tokens_per_s, 2),
        "keys_attended": round(finished.attended_fraction, 4),
    }


def context_payload(found: StoredContext) -> dict[str, Any]:
    return {
        "id": found.id,
        "object": "context",
        "tokens": found.n_tokens,
        "bytes": found.bytes,
        "created": int(found.created),
        "last_used": int(found.last_used),
        "source": found.source,
        "kind": "messages" if "messages" in found.origin else "text",
    }
