"""``POST /v1/embeddings`` (OpenAI-compatible) and ``GET /v1/models`` (every served model).

Dense vectors (a dense model's, an image model's texts) go through the micro-batcher; sparse and
multivector embeddings and images take the simpler path of ``routes/_kinds.py``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from .._images import is_image_uri
from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import EmbeddingsRequest
from ..state import ServiceState
from ._common import dense_data, real_tokens, resize, service, tokenize_checked
from ._kinds import kind_payload

router = APIRouter()


def _names(model_id: str, spec: str | None) -> set[str]:
    """The model names a client may send: the id, the configured spec and their last parts."""
    names = {model_id, model_id.rsplit("/", 1)[-1]}
    if spec:
        names |= {spec, os.path.basename(os.path.normpath(spec))}
    return names


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> JSONResponse:
    # The service answers this route on a lean path in front of FastAPI (server/fastpath.py);
    # this registration documents it in the OpenAPI schema and serves any request the lean
    # path hands on (a body that is not JSON).
    return JSONResponse(await embeddings_payload(service(request), body))


async def embeddings_payload(state: ServiceState, body: EmbeddingsRequest) -> dict[str, Any]:
    """The answer to one embeddings request, as a JSON-ready mapping (raises ``APIError``)."""
    model = state.model
    if body.model is not None and body.model not in _names(model.model_id, state.settings.model):
        raise APIError(
            404,
            f"the model {body.model!r} is not served here; this service serves {model.model_id!r}",
            param="model",
            code="model_not_found",
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise APIError(400, "input must not be empty", param="input")
    if len(texts) > state.settings.max_inputs:
        raise APIError(
            400,
            f"{len(texts)} inputs, more than the limit of {state.settings.max_inputs} per request",
            param="input",
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise APIError(400, f"input[{i}] is empty", param="input")
    if state.kind != "dense" and (
        state.kind != "image" or any(is_image_uri(text) for text in texts)
    ):
        # Sparse and multivector models, and images: their own path, off the micro-batcher.
        return await kind_payload(state, body, texts)
    truncate = state.settings.truncate if body.truncate is None else body.truncate
    encodings = await tokenize_checked(state, texts, truncate=truncate)
    vectors = await state.batcher.run(encodings)
    vectors = resize(np.asarray(vectors, dtype=np.float32), body.dimensions, model.dim)
    tokens = real_tokens(encodings)
    data = dense_data(vectors, body.encoding_format)
    return {
        "object": "list",
        "data": data,
        "model": model.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/v1/models")
async def models(request: Request) -> JSONResponse:
    state = service(request)
    model = state.model
    data: list[dict[str, Any]] = [
        {
            "id": model.model_id,
            "object": "model",
            "owned_by": "vectorstream",
            "kind": state.kind,
            "dim": model.dim,
            "max_tokens": model.max_tokens,
        }
    ]
    ranker = state.reranker
    if ranker is not None:
        data.append(
            {
                "id": ranker.model_id,
                "object": "model",
                "owned_by": "vectorstream",
                "kind": "rerank",
                "max_tokens": ranker.max_tokens,
            }
        )
    llm = state.llm
    if llm is not None:
        # The id is a name the chat and completions routes accept as their ``model``.
        data.append(
            {
                "id": llm.model_id,
                "object": "model",
                "owned_by": "vectorstream",
                "kind": "llm",
                "max_tokens": llm.engine.llm.window,
            }
        )
    return JSONResponse({"object": "list", "data": data})
