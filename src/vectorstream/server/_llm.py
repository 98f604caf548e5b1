"""The served LLM: one worker thread per model, a bounded queue, and events back to the loop.

A CPU runs one generation well and two badly (they share the cores and both slow down), so the
model has one worker thread and requests wait in a queue of ``llm_queue`` places; a request that
finds it full is refused at once (503 with ``Retry-After``). Each job reports to its request
through an asyncio queue: text deltas as they are decoded, then the outcome or the error. A job
whose client went away is cancelled: skipped if it has not started, stopped between two tokens if
it has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VectorstreamError
from .errors import APIError
from .metrics import LLMMetrics
from .settings import ServerSettings

__all__ = ["Job", "LLMService", "build_llm_service"]

log = logging.getLogger("vectorstream.server.llm")

_STOP = object()


@dataclass(eq=False)
class Job:
    """One unit of model work and the channel its results travel back on."""

    work: Callable[[Job], Any]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value: Any) -> None:
        """Called on the worker thread: hand an event to the request's coroutine."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def delta(self, text: str) -> None:
        self.emit("delta", text)

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class LLMService:
    """A ``ChatEngine`` behind one worker thread and a bounded queue."""

    def __init__(
        self, engine: Any, *, max_queue: int, retry_after_s: int, metrics: LLMMetrics
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="vectorstream-llm", daemon=True)
        self._thread.start()

    @property
    def model_id(self) -> str:
        return str(self.engine.llm.model_id)

    def submit(self, work: Callable[[Job], Any]) -> Job:
        """Queue ``work``; 503 when the queue is full. Await ``job.events`` for its results."""
        job = Job(work=work, loop=asyncio.get_running_loop())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise APIError(
                503,
                f"the model is busy ({self._queue.maxsize} requests waiting); retry shortly",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s)},
            ) from None
        self.metrics.queue_depth.set(self._queue.qsize())
        return job

    def observe(self, finished: Any) -> None:
        """Record a finished generation in the metrics."""
        m = self.metrics
        m.generations.labels(finished.finish_reason).inc()
        m.prompt_tokens.inc(finished.prompt_tokens)
        m.reused_tokens.inc(finished.cached_tokens)
        m.completion_tokens.inc(finished.completion_tokens)
        m.ttft.observe(finished.ttft_s)
        if finished.tokens_per_s > 0:
            m.tokens_per_s.observe(finished.tokens_per_s)
        m.attended.observe(finished.attended_fraction)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            self.metrics.queue_depth.set(self._queue.qsize())
            if job is _STOP:
                return
            if job.cancelled():
                self.metrics.generations.labels("cancelled").inc()
                continue
            try:
                result = job.work(job)
            except Exception as exc:  # reported to the request, which answers in the error shape
                if not isinstance(exc, APIError | VectorstreamError):
                    log.exception("LLM work failed")
                self.metrics.generations.labels("error").inc()
                job.emit("error", exc)
            else:
                if hasattr(result, "finish_reason"):  # a generation (not a stored context)
                    self.observe(result)
                job.emit("done", result)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what waits, let the running job stop at its next token, end the thread."""
        while True:
            try:
                waiting = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(waiting, Job):
                waiting.cancel.set()
                waiting.emit(
                    "error", APIError(503, "the service is shutting down", code="shutting_down")
                )
        self._queue.put(_STOP)
        self._thread.join(timeout)


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-") or "model"


def build_llm_service(settings: ServerSettings, metrics: LLMMetrics, llm: Any = None) -> LLMService:
    """Load ``settings.llm`` (unless ``llm``, a ``LoadedLLM``, is handed in) and start its worker."""
    from ..attention._config import SparseConfig
    from ..attention._llm_load import load_llm
    from ..attention._serving import ChatEngine, load_profiles
    from ..attention._store_index import ContextStore
    from ..config import load_settings

    if llm is None:
        assert settings.llm is not None
        llm = load_llm(settings.llm, yarn=settings.llm_yarn)
    config = (
        SparseConfig() if settings.llm_alpha is None else SparseConfig(alpha=settings.llm_alpha)
    )
    folder = settings.llm_contexts
    if folder is None:
        # Keys computed under stretched positions are another model's: their own folder.
        name = (
            llm.model_id if not settings.llm_yarn else f"{llm.model_id}-yarn{settings.llm_yarn:g}"
        )
        folder = str(load_settings().cache_path / "llm-contexts" / _safe_name(name))
    store = ContextStore(
        Path(os.path.expanduser(folder)),
        config,
        budget_bytes=settings.llm_context_budget,
        kv_dtype=settings.llm_kv_dtype,
    )
    engine = ChatEngine(
        llm,
        store,
        config=config,
        profiles=load_profiles(settings.llm_profiles),
        store_min_tokens=settings.llm_store_min_tokens,
    )
    log.info(
        "serving the LLM %s (window %d tokens; %d stored contexts at %s)",
        llm.model_id,
        llm.window,
        len(store.contexts()),
        store.path,
    )
    return LLMService(
        engine, max_queue=settings.llm_queue, retry_after_s=settings.retry_after_s, metrics=metrics
    )
