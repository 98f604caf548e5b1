"""``POST /v1/search`` and ``POST /similar`` (the classic embed-and-search service shape)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request

from ...types import Hit
from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import SearchRequest, SimilarRequest
from ..state import ServiceState
from ._common import service


def _run_search(state: ServiceState, body: SearchRequest) -> list[Hit]:
    # In a worker thread: the library's search embeds the query through the batched model (so it
    # shares batches with other requests) and then queries the store, which may block.
    from ...search import search

    if body.mode == "range" and body.beta is None and body.alpha is None:
        raise APIError(400, "mode 'range' needs beta or alpha", param="mode")
    store = state.store(body.collection)
    hits: list[Hit] = search(
        body.query,
        store=store,
        model=state.batched_model,
        k=body.k,
        where=body.where,
        mode=body.mode,
        beta=body.beta,
        alpha=body.alpha,
    )
    return hits


def _hit(hit: Hit) -> dict[str, Any]:
    return hit.to_dict()


router = APIRouter()


@router.post("/v1/search")
async def search_route(body: SearchRequest, request: Request) -> JSONResponse:
    state = service(request)
    hits = await anyio.to_thread.run_sync(_run_search, state, body)
    return JSONResponse(
        {
            "object": "list",
            "query": body.query,
            "collection": body.collection or state.settings.collection,
            "mode": body.mode,
            "data": [_hit(h) for h in hits],
        }
    )


@router.post("/similar")
async def similar(body: SimilarRequest, request: Request) -> JSONResponse:
    state = service(request)
    query = SearchRequest(query=body.text, k=body.num_results)
    hits = await anyio.to_thread.run_sync(_run_search, state, query)
    return JSONResponse({"text": [h.text for h in hits]})
