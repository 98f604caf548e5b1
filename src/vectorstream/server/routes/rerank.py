"""``POST /v1/rerank``: documents ordered by a cross-encoder's relevance to a query.

The request and answer are the shape Cohere, Jina and TEI's Cohere-style route share::

    {"model"?, "query", "documents": [str | {"text": str}], "top_n"?, "return_documents"? = true}
    -> {"model", "results": [{"index", "relevance_score", "document"?: {"text"}}], "usage": {"total_tokens"}}

Results are best first; ``relevance_score`` is the reranker's score as sentence-transformers'
``CrossEncoder.predict`` gives it for that model (see ``vectorstream.models._rerank_model``).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request

from ...errors import ConfigError
from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import RerankRequest
from ..settings import ServerSettings
from ..state import ServiceState
from ._common import real_tokens, service
from .embeddings import _names

router = APIRouter()


def load_reranker(settings: ServerSettings) -> Any:
    """The reranker ``settings.rerank_model`` names (a worker thread calls this at startup)."""
    from ...models import load_model

    model = load_model(settings.rerank_model, backend=settings.backend, kind="rerank")
    if getattr(model, "num_labels", 1) != 1:
        raise ConfigError(
            f"{settings.rerank_model} has {model.num_labels} labels; /v1/rerank needs a "
            "cross-encoder with one score per pair"
        )
    return model


def _score(model: Any, query: str, documents: list[str]) -> tuple[list[float], int]:
    encodings = model.tokenize_pairs([(query, d) for d in documents])
    scores = model.score_tokenized(encodings)
    return [float(s) for s in scores], real_tokens(encodings)


def _checked(state: ServiceState, body: RerankRequest) -> tuple[Any, list[str]]:
    model = state.reranker
    if model is None:
        raise APIError(
            404,
            "this service has no reranker; start it with --rerank-model SPEC "
            "(or VECTORSTREAM_SERVER_RERANK_MODEL)",
            code="reranker_not_loaded",
        )
    if body.model is not None and body.model not in _names(
        model.model_id, state.settings.rerank_model
    ):
        raise APIError(
            404,
            f"the model {body.model!r} is not served here; this service reranks with "
            f"{model.model_id!r}",
            param="model",
            code="model_not_found",
        )
    if not body.query.strip():
        raise APIError(400, "query must not be empty", param="query")
    documents = [d if isinstance(d, str) else d.text for d in body.documents]
    if not documents:
        raise APIError(400, "documents must not be empty", param="documents")
    limit = state.settings.max_rerank_documents
    if len(documents) > limit:
        raise APIError(
            400,
            f"{len(documents)} documents, more than the limit of {limit} per request",
            param="documents",
        )
    chars = state.settings.max_document_chars
    for i, text in enumerate(documents):
        if len(text) > chars:
            raise APIError(
                400, f"documents[{i}] has {len(text)} characters, over {chars}", param="documents"
            )
    if body.top_n is not None and body.top_n < 1:
        raise APIError(400, f"top_n must be at least 1, got {body.top_n}", param="top_n")
    return model, documents


async def rerank_payload(state: ServiceState, body: RerankRequest) -> dict[str, Any]:
    """The answer to one rerank request, as a JSON-ready mapping (raises ``APIError``)."""
    model, documents = _checked(state, body)
    async with state.rerank_lock:
        scores, tokens = await anyio.to_thread.run_sync(_score, model, body.query, documents)
    order = sorted(range(len(documents)), key=lambda i: -scores[i])  # stable: ties keep order
    if body.top_n is not None:
        order = order[: body.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if body.return_documents:
            result["document"] = {"text": documents[i]}
        results.append(result)
    return {"model": model.model_id, "results": results, "usage": {"total_tokens": tokens}}


@router.post("/v1/rerank")
async def rerank(body: RerankRequest, request: Request) -> JSONResponse:
    return JSONResponse(await rerank_payload(service(request), body))
