"""``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI-compatible) over the LLM.

Both build the prompt's token ids here (the chat template for messages), check them against the
window, and queue one job on the model's worker. Streamed answers are server-sent events in
OpenAI's chunk format, ending with ``data: [DONE]``; a failure after the first chunk is sent as
``data: {"error": {...}}``, which OpenAI's clients raise.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ...attention._serving import Sampling
from ...errors import ConfigError
from .._llm import Job, LLMService
from .._llm_schemas import ChatCompletionRequest, CompletionRequest
from ..errors import APIError, answer_for
from ..responses import FastJSONResponse as JSONResponse
from ._llm_common import (
    ClientGone,
    check_length,
    check_model,
    extension,
    llm_service,
    off_loop,
    outcome,
    stored_context,
    usage,
)

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _chat_ids(
    llm: LLMService, body: ChatCompletionRequest
) -> tuple[list[int], dict[str, Any]]:
    """The prompt's ids, and where it came from (kept with a context stored on the fly)."""
    engine = llm.engine
    messages = [m.as_template() for m in body.messages]
    chars = sum(len(m["content"]) for m in messages)
    prefix: list[int] = []
    if body.context is not None:
        found = stored_context(llm, body.context)
        before = found.origin.get("messages")
        if before:
            # A chat's beginning: the template sees the whole conversation, so the stored tokens
            # are its prefix (and are reused) whenever the template is prefix-stable.
            messages = [dict(m) for m in before] + messages
            chars += sum(len(str(m.get("content", ""))) for m in before)
        else:
            prefix = await off_loop(engine.store.tokens, found.id, chars=found.n_tokens * 4)
    try:
        ids = await off_loop(engine.chat_ids, messages, chars=chars)
    except ConfigError as exc:
        raise APIError(400, str(exc), param="messages") from exc
    return prefix + ids, {"messages": messages}


async def _completion_ids(
    llm: LLMService, body: CompletionRequest
) -> tuple[list[int], dict[str, Any]]:
    engine = llm.engine
    try:
        prompt = body.prompt_value()
    except ValueError as exc:
        raise APIError(400, str(exc), param="prompt") from exc
    prefix: list[int] = []
    if body.context is not None:
        found = stored_context(llm, body.context)
        prefix = await off_loop(engine.store.tokens, found.id, chars=found.n_tokens * 4)
    if isinstance(prompt, str):
        ids = await off_loop(engine.text_ids, prompt, chars=len(prompt))
        origin: dict[str, Any] = {"text": prompt}
    else:
        vocab = len(engine.llm.tokenizer)
        if any(t < 0 or t >= vocab for t in prompt):
            raise APIError(400, f"token ids must be in 0..{vocab - 1}", param="prompt")
        ids, origin = list(prompt), {}
    return prefix + ids, origin


def _settings(llm: LLMService, body: Any) -> tuple[Sampling, Any]:
    try:
        config = llm.engine.config_for(body.alpha, body.profile)
    except ConfigError as exc:
        raise APIError(400, str(exc), param="profile") from exc
    sampling = Sampling(
        max_tokens=body.token_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
    )
    return sampling, config


def _submit(llm: LLMService, ids: list[int], body: Any, origin: dict[str, Any]) -> Job:
    sampling, config = _settings(llm, body)

    def work(job: Job) -> Any:
        return llm.engine.generate(
            ids, sampling, config, emit=job.delta, cancelled=job.cancelled, origin=origin
        )

    return llm.submit(work)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _events(
    llm: LLMService, job: Job, head: dict[str, Any], chunk: Any, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE stream of one job; closing it early (client gone) cancels the job."""
    try:
        first = chunk(None, None, role=True)
        if first is not None:
            yield _sse({**head, **first, **({"usage": None} if include_usage else {})})
        while True:
            kind, value = await job.events.get()
            if kind == "delta":
                yield _sse(
                    {**head, **chunk(value, None), **({"usage": None} if include_usage else {})}
                )
            elif kind == "done":
                last = {**head, **chunk("", value.finish_reason), "vectorstream": extension(value)}
                yield _sse({**last, **({"usage": None} if include_usage else {})})
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": usage(value)})
                yield b"data: [DONE]\n\n"
                return
            else:
                body = answer_for(value, llm.retry_after_s).body
                yield b"data: " + bytes(body) + b"\n\n"
                return
    finally:
        job.cancel.set()  # a no-op once done; stops the generation when the client left


def _stream(
    llm: LLMService, job: Job, head: dict[str, Any], chunk: Any, body: Any
) -> StreamingResponse:
    include = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _events(llm, job, head, chunk, include),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _answer(
    job: Job, request: Request, head: dict[str, Any], content: Callable[[Any], dict[str, Any]]
) -> Response:
    """The whole answer once the job is done: one choice holding ``content(done)``."""
    try:
        done = await outcome(job, request)
    except ClientGone:
        return Response(status_code=499)
    choice = {"index": 0, **content(done), "logprobs": None, "finish_reason": done.finish_reason}
    return JSONResponse(
        {**head, "choices": [choice], "usage": usage(done), "vectorstream": extension(done)}
    )


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    llm = llm_service(request)
    check_model(llm, request, body.model)
    ids, origin = await _chat_ids(llm, body)
    check_length(llm, ids, "messages")
    job = _submit(llm, ids, body, origin)
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": llm.model_id,
        "system_fingerprint": None,
    }
    if body.stream:

        def chunk(text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"choices": [choice]}

        head["object"] = "chat.completion.chunk"
        return _stream(llm, job, head, chunk, body)
    head["object"] = "chat.completion"
    return await _answer(
        job,
        request,
        head,
        lambda done: {"message": {"role": "assistant", "content": done.text, "refusal": None}},
    )


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    llm = llm_service(request)
    check_model(llm, request, body.model)
    ids, origin = await _completion_ids(llm, body)
    check_length(llm, ids, "prompt")
    job = _submit(llm, ids, body, origin)
    head = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": llm.model_id,
        "system_fingerprint": None,
    }
    if body.stream:

        def chunk(
            text: str | None, finish: str | None, role: bool = False
        ) -> dict[str, Any] | None:
            if role:
                return None  # completions have no opening role chunk
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            return {"choices": [choice]}

        return _stream(llm, job, head, chunk, body)
    return await _answer(job, request, head, lambda done: {"text": done.text})
