"""``GET /healthz`` (the process answers), ``GET /readyz`` (model loaded, store reachable), ``GET /metrics``."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import APIError
from ..responses import FastJSONResponse as JSONResponse
from ..state import ServiceState

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _store_check(state: ServiceState) -> dict[str, object]:
    try:
        count = state.store().count()
    except APIError as exc:
        # The store answered; the collection is just not there yet (nothing ingested).
        return {"ok": exc.status == 404, "count": 0, "error": exc.message}
    except Exception as exc:  # any failure means "not ready"; the reason goes in the answer
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "count": count}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        return JSONResponse({"status": "starting", "model": None, "store": None}, status_code=503)
    store = await anyio.to_thread.run_sync(_store_check, state)
    ready = bool(store["ok"])
    return JSONResponse(
        {
            "status": "ready" if ready else "not ready",
            "model": {
                "id": state.model.model_id,
                "kind": state.kind,
                "dim": state.model.dim,
                "max_tokens": state.model.max_tokens,
            },
            "store": {
                "uri": state.settings.store,
                "collection": state.settings.collection,
                **store,
            },
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is not None:
        state.metrics.queue_depth.set(state.batcher.queued_inputs)
        state.metrics.cache_bytes.set(state.highlighter.cache.bytes)
        for name, n in state.jobs.counts().items():
            state.metrics.jobs.labels(name).set(n)
        registry = state.metrics.registry
    else:
        registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
