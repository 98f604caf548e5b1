"""Helpers the routes share: reaching the service state, tokenizing within the limits."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np
from fastapi import Request

from ..errors import APIError
from ..state import ServiceState

# Tokenizing more characters than this moves off the event loop (the Rust tokenizer releases the
# GIL); below it, a thread hop costs more than the work.
INLINE_TOKENIZE_CHARS = 16_384


def service(request: Request) -> ServiceState:
    return service_state(request.app.state)


def service_state(app_state: Any) -> ServiceState:
    """The running service from an app's ``state``; 503 while it starts or stops."""
    state: ServiceState | None = getattr(app_state, "service", None)
    if state is None:
        raise APIError(503, "the service is starting", code="not_ready")
    return state


def _truncated_text(text: str, encoding: Any, keep: int) -> str:
    """``text`` cut after its ``keep``-th non-special token (offsets come from the tokenizer)."""
    text = text.strip()  # the model strips inputs, so offsets refer to the stripped text
    ends = [
        end
        for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
        if not special
    ]
    return text if keep >= len(ends) else text[: ends[keep - 1]] if keep > 0 else ""


async def tokenize_checked(
    state: ServiceState,
    texts: Sequence[str],
    *,
    truncate: bool,
    param: str = "input",
    positions: Sequence[int] | None = None,
) -> list[Any]:
    """Tokenize ``texts`` for the model, enforcing the per-input token limit.

    Over the limit: 400 naming the input, or (``truncate``) cut to the limit. ``positions``: where
    each text stands in the request, when ``texts`` are some of its inputs (for the message).
    """
    model = state.model
    limit = model.max_tokens
    if state.settings.max_tokens_per_input:
        limit = min(limit, state.settings.max_tokens_per_input)
    items = list(texts)
    if sum(len(t) for t in items) > INLINE_TOKENIZE_CHARS:
        encodings = await anyio.to_thread.run_sync(model.tokenize, items)
    else:
        encodings = model.tokenize(items)
    over = [i for i, e in enumerate(encodings) if e.overflowing or sum(e.attention_mask) > limit]
    if not over:
        return list(encodings)
    if not truncate:
        i = over[0]
        n = _count_tokens(model, items[i]) + model.num_special_tokens
        at = positions[i] if positions is not None else i
        where = f"{param}[{at}]" if len(items) > 1 or param == "input" else param
        raise APIError(
            400,
            f'{where} has {n} tokens, more than the limit of {limit}; shorten it or send "truncate": true',
            param=param,
            code="input_too_long",
        )
    if limit < model.max_tokens:
        # The model already cut at its own limit; a lower service limit needs a second cut.
        keep = limit - model.num_special_tokens
        cut = [_truncated_text(items[i], encodings[i], keep) for i in over]
        for i, enc in zip(over, model.tokenize(cut), strict=True):
            encodings[i] = enc
    return list(encodings)


def _count_tokens(model: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens or truncation (for an over-the-limit message)."""
    count = getattr(model, "count_tokens", None)
    if callable(count):
        return int(count([text])[0])
    return len(model.tokenizer.encode(text, add_special_tokens=False).ids)


def real_tokens(encodings: Sequence[Any]) -> int:
    return int(sum(sum(e.attention_mask) for e in encodings))


def resize(vectors: np.ndarray, dimensions: int | None, full: int) -> np.ndarray:
    """Keep the first ``dimensions`` and renormalise (OpenAI's ``dimensions`` semantics)."""
    if dimensions is None or dimensions == full:
        return vectors
    if dimensions > full:
        raise APIError(
            400,
            f"dimensions must be at most {full} for this model, got {dimensions}",
            param="dimensions",
        )
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32)


def dense_data(vectors: np.ndarray, encoding_format: str) -> list[dict[str, Any]]:
    """OpenAI's ``data`` items for dense rows: float lists, or base64 of little-endian float32."""
    if encoding_format == "base64":
        # Little-endian float32 bytes, as OpenAI sends them (its client decodes with numpy).
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        return [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(row.tobytes()).decode(),
            }
            for i, row in enumerate(rows)
        ]
    return [
        {"object": "embedding", "index": i, "embedding": row}
        for i, row in enumerate(np.ascontiguousarray(vectors, dtype=np.float32))
    ]
