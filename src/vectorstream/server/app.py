"""The app factory: ``create_app(settings) -> FastAPI``.

The model loads once, in the lifespan, before the first request; every request shares it through
the micro-batcher. Tests hand in a model (any object with the Embedder's interface), a store or an
ingest function at these seams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import ConfigError
from ..search.highlights import HighlightEngine
from .batcher import BatchStats, MicroBatcher
from .errors import install_error_handlers
from .fastpath import EmbeddingsFastPath
from .jobs import IngestFn, JobManager
from .metrics import Metrics, make_metrics
from .middleware import GuardMiddleware
from .routes import (
    chat,
    contexts,
    embeddings,
    health,
    highlights,
    ingest,
    page,
    rerank,
    search,
    sources,
)
from .routes.page import STATIC_DIR
from .settings import ServerSettings
from .state import BatchedModel, ServiceState, model_kind

log = logging.getLogger("vectorstream.server")


def inference_lanes(settings: ServerSettings, cores: int | None = None) -> tuple[int, int | None]:
    """``(lanes, threads per lane)`` for the model the service loads.

    On a CPU, two batches each on half the cores beat one batch on all of them: a
    single-threaded ONNX Runtime call never waits for a sibling thread (one that the event loop
    has just taken the core from), and it is nearly as efficient on 8 inputs as on 64, so a batch
    can start while the next gathers (BENCHMARKS.md, *The HTTP service*, has the figures). The
    torch backend (a GPU, when there is one) keeps one lane: its device runs one batch at a time
    anyway.
    """
    from ..models._threads import available_cores

    cores = cores or available_cores()
    if settings.lanes:
        lanes = settings.lanes
    elif settings.backend == "torch":
        return 1, None
    else:
        lanes = 2 if cores >= 2 else 1
    return lanes, max(1, cores // lanes)


def solo_model(embedder: Any, lanes: int, settings: ServerSettings) -> Any:
    """The model on every core, for a request that finds the service idle; ``None`` if not worth it.

    A single-threaded lane answers one short query more slowly than all the cores together
    would; a second ONNX session on every core costs about the graph's size in memory, so it is
    kept only for graphs up to ``solo_max_bytes``.
    """
    threads = embedder.threads if hasattr(embedder, "threads") else None
    if lanes <= 1 or not threads or settings.solo_max_bytes <= 0:
        return None
    # Only the dense Embedder has a twin on other threads (the other kinds have no backend_impl).
    weight_bytes = getattr(getattr(embedder, "backend_impl", None), "weight_bytes", 0)
    if not weight_bytes or weight_bytes > settings.solo_max_bytes:
        return None
    twin = embedder.with_threads(threads * lanes)
    return None if twin is embedder else twin


def _load_model(settings: ServerSettings, threads: int | None) -> Any:
    from ..models import load_model

    return load_model(settings.model, backend=settings.backend, threads=threads, kind=settings.kind)


def create_app(
    settings: ServerSettings | None = None,
    *,
    model: Any = None,
    store: Any = None,
    ingest_fn: IngestFn | None = None,
    reranker: Any = None,
    llm: Any = None,
) -> FastAPI:
    """Build the service.

    ``settings``: see :class:`ServerSettings` (default: from the environment). ``model``: an
    already loaded model, an Embedder or a sparse, multivector or image model (default:
    ``load_model(settings.model, kind=settings.kind)`` at startup). ``store``: an
    open store used for the default collection (default: opened from ``settings.store`` on first
    use). ``ingest_fn``: replaces :func:`vectorstream.ingest` for ingest jobs. ``reranker``: a
    loaded cross-encoder for ``/v1/rerank`` (default: ``settings.rerank_model`` loaded at
    startup, or none). ``llm``: a loaded ``LoadedLLM`` to serve at ``/v1/chat/completions``
    (default: ``settings.llm`` loaded at startup, or none; docs/llm.md).
    """
    if settings is None:
        from .settings import server_settings_from_env

        settings = server_settings_from_env()
    settings = settings.resolved()
    assert settings.store is not None and settings.collection is not None
    # The same check as every ingest: a default collection the store cannot hold fails here,
    # before the model loads (``vectorstream serve`` exits 2), not at the first request.
    from ..pipeline.options import check_collection

    check_collection(settings.store, settings.collection)
    metrics = make_metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # numpy's BLAS on one thread while serving: the service's own matrix products (pooling,
        # in-memory search) are small, and BLAS worker threads busy-wait after every call, taking
        # the cores from inference (an in-memory search is several times slower with two BLAS
        # threads beside ONNX Runtime than with one: BENCHMARKS.md, *The HTTP service*).
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(limits=1, user_api="blas")
        embedder = model
        solo = None
        if embedder is None:
            lanes, threads = inference_lanes(settings)
            log.info("loading model %s (%d lanes of %s threads)", settings.model, lanes, threads)
            embedder = await loop.run_in_executor(None, _load_model, settings, threads)
            solo = await loop.run_in_executor(None, solo_model, embedder, lanes, settings)
        else:
            lanes = settings.lanes or 1  # a model handed in: as many lanes as asked for
        kind = model_kind(embedder)
        if settings.kind is not None and kind != settings.kind:
            raise ConfigError(
                f"the model {embedder.model_id!r} is a {kind} model, not the {settings.kind} "
                "model the settings name"
            )
        served_llm = None
        if llm is not None or settings.llm:
            from ._llm import build_llm_service

            log.info("loading the LLM %s", settings.llm or getattr(llm, "model_id", "?"))
            served_llm = await loop.run_in_executor(
                None, build_llm_service, settings, metrics.llm, llm
            )
        ranker = reranker
        if ranker is None and settings.rerank_model:
            log.info("loading reranker %s", settings.rerank_model)
            ranker = await loop.run_in_executor(None, rerank.load_reranker, settings)

        def on_batch(stats: BatchStats) -> None:
            metrics.batch_inputs.observe(stats.inputs)
            metrics.batch_requests.observe(stats.requests)
            metrics.batch_tokens.observe(stats.tokens)
            metrics.tokens.inc(stats.tokens)
            metrics.batch_seconds.observe(stats.seconds)
            metrics.queue_depth.set(batcher.queued_inputs)

        batcher = MicroBatcher(
            embedder.embed_tokenized,
            max_wait=settings.batch_wait_ms / 1000.0,
            max_tokens=settings.batch_max_tokens,
            max_queue=settings.queue_max_inputs,
            on_batch=on_batch,
            lanes=lanes,
            run_solo=solo.embed_tokenized if solo is not None else None,
        )
        batcher.start()
        batched = BatchedModel(embedder, batcher, loop)
        state: ServiceState

        def job_finished(job: Any) -> None:
            # A search handle opened before the job may not see its rows until it refreshes.
            state.forget_store(job.collection)

        assert settings.store is not None
        jobs = JobManager(
            store=settings.store,
            model=embedder,
            ingest_fn=ingest_fn,
            max_jobs=settings.max_jobs,
            on_finished=job_finished,
        )
        state = ServiceState(
            settings=settings,
            model=embedder,
            batcher=batcher,
            metrics=metrics,
            loop=loop,
            highlighter=HighlightEngine(
                embedder, cache_bytes=settings.highlight_cache_bytes, embed=batched.embed
            ),
            jobs=jobs,
            store_override=store,
            reranker=ranker,
            kind=kind,
            kind_slots=asyncio.Semaphore(lanes),
            llm=served_llm,
        )
        app.state.service = state
        try:
            # Open the default collection now, so the first search does not pay for it and a
            # store that cannot be reached shows in the log at once (readyz reports it too).
            await loop.run_in_executor(None, state.store)
        except Exception as exc:  # not fatal: embeddings and highlights need no store
            log.warning("the store %s is not usable yet: %s", settings.store, exc)
        log.info(
            "serving %s (%s, dim %d) on store %s",
            embedder.model_id,
            kind,
            embedder.dim,
            settings.store,
        )
        try:
            yield
        finally:
            app.state.service = None
            await batcher.stop()
            await loop.run_in_executor(None, jobs.close)
            if served_llm is not None:
                await loop.run_in_executor(None, served_llm.close)
            state.close()
            blas.restore_original_limits()

    app = FastAPI(
        title="vectorstream",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app, settings.retry_after_s)
    for module in (
        embeddings,
        rerank,
        search,
        highlights,
        ingest,
        sources,
        chat,
        contexts,
        health,
        page,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The lean embeddings path sits inside the guard (added later = outside it), so the API key,
    # body limit and metrics apply to it as to every route.
    app.add_middleware(
        EmbeddingsFastPath,
        state=app.state,
        retry_after_s=settings.retry_after_s,
    )
    # The guard sees (and counts) every request, even refused ones. CORS, when configured, goes
    # outside it: a browser's preflight carries no API key and must not be refused for that.
    app.add_middleware(
        GuardMiddleware,
        metrics=metrics,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def metrics_of(app: FastAPI) -> Metrics:
    """The app's private metrics (for tests and embedding applications)."""
    metrics: Metrics = app.state.metrics
    return metrics


__all__ = ["create_app", "metrics_of"]
