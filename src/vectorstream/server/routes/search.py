"""``POST /v1/search`` and ``POST /similar`` (the classic embed-and-search service shape).

A dense query (a dense model's, an image model's text tower) shares the micro-batcher with every
other request; a sparse or multivector model embeds it with its own query side, and the store is
searched with an ``Embedding`` of the model's kind. Image hits (empty text,
``metadata.media_type``) come back like any other, with their source and metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request

from ...errors import ConfigError
from ...types import Embedding, Hit
from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import SearchRequest, SimilarRequest
from ..state import ServiceState
from ._common import service, tokenize_checked
from ._kinds import query_embedding


class _EmbeddedQuery:
    """The served model with the query's vector already computed (by the batcher, on the loop).

    The library's ``search`` asks its model to ``embed([query])``; handing it this instead keeps
    its semantics (model check, filters, DIPR range, alpha) while the embedding itself shares a
    batch with concurrent requests and costs no extra thread hops.
    """

    def __init__(self, model: Any, query: str, vector: np.ndarray) -> None:
        self.model_id = model.model_id
        self.dim = model.dim
        self._query = query
        self._vector = vector

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        items = list(texts)
        if items != [self._query]:
            raise ValueError("this stand-in only embeds the query it was made for")
        return self._vector.reshape(1, -1)


class _EmbeddedKindQuery:
    """The served sparse or multivector model with the query's embedding already computed.

    The library's ``search`` embeds a query with ``embed_queries`` when the model has it, and
    checks its kind against the collection's.
    """

    def __init__(self, model: Any, query: str, embedding: Embedding) -> None:
        self.model_id = model.model_id
        self.dim = model.dim
        self._query = query
        self._embedding = embedding

    def embed_queries(self, texts: Iterable[str]) -> list[Embedding]:
        if list(texts) != [self._query]:
            raise ValueError("this stand-in only embeds the query it was made for")
        return [self._embedding]

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        raise TypeError(f"a {self._embedding.kind} model embeds queries with embed_queries()")


async def _search(state: ServiceState, body: SearchRequest) -> list[Hit]:
    from ...search._search import range_width

    try:
        # The library's rule for mode, beta and alpha, checked before any embedding work.
        range_width(body.mode, body.beta, body.alpha)
    except ConfigError as exc:
        raise APIError(400, str(exc), param="mode") from exc
    if state.kind in ("sparse", "multivector"):
        # The model's own query side (markers, expansion), cut to its query length.
        embedding = await query_embedding(state, body.query)
        stand_in = _EmbeddedKindQuery(state.model, body.query, embedding)
        return await anyio.to_thread.run_sync(_run_search, state, body, stand_in)
    # A query longer than the model's limit is cut, as the library's search would.
    encodings = await tokenize_checked(state, [body.query], truncate=True, param="query")
    vector = (await state.batcher.submit(encodings))[0]
    store = state.cached_store(body.collection)
    answers_from_memory = getattr(store, "answers_from_memory", None)
    if callable(answers_from_memory) and answers_from_memory(body.where):
        # An exact search of an in-memory snapshot: well under a millisecond and no I/O, so it
        # runs here rather than paying two thread hand-offs.
        return _run_search(state, body, _EmbeddedQuery(state.model, body.query, vector))
    return await anyio.to_thread.run_sync(
        _run_search, state, body, _EmbeddedQuery(state.model, body.query, vector)
    )


def _run_search(state: ServiceState, body: SearchRequest, model: Any) -> list[Hit]:
    # In a worker thread: opening and querying a store may block.
    from ...search import search

    store = state.store(body.collection)
    hits: list[Hit] = search(
        body.query,
        store=store,
        model=model,
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
    hits = await _search(state, body)
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
    hits = await _search(state, query)
    return JSONResponse({"text": [h.text for h in hits]})
