"""What the app holds while it runs: one model, one batcher, stores, the highlights engine, jobs.

Everything here is created in the app's lifespan (so the model loads once, before the first
request) and reached by routes through ``request.app.state.service``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .batcher import MicroBatcher
from .errors import APIError
from .jobs import JobManager
from .metrics import Metrics
from .settings import SERVED_KINDS, ServerSettings

log = logging.getLogger("vectorstream.server.state")


class BatchedModel:
    """An Embedder for worker threads whose inference goes through the loop's micro-batcher.

    Library code that takes a ``model`` (search, highlights) runs in a worker thread with this in
    its hands, so its query and chunk vectors share batches with concurrent HTTP requests. Never
    call it on the event loop's own thread: it waits for the loop.
    """

    def __init__(self, model: Any, batcher: MicroBatcher, loop: asyncio.AbstractEventLoop) -> None:
        self._model = model
        self._batcher = batcher
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        # dim, max_tokens, model_id, tokenizer, count_tokens, … come from the real model.
        return getattr(self._model, name)

    def embed_tokenized(self, encodings: Sequence[Any]) -> np.ndarray:
        if not encodings:
            return np.zeros((0, self._model.dim), dtype=np.float32)
        future = asyncio.run_coroutine_threadsafe(self._batcher.run(list(encodings)), self._loop)
        return future.result()

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not one string")
        return self.embed_tokenized(self._model.tokenize(list(texts)))


def model_kind(model: Any) -> str:
    """The kind of a loaded model (one that does not say is dense), if the service embeds with it."""
    kind = str(getattr(model, "kind", "dense"))
    if kind not in SERVED_KINDS:
        hint = " (serve a reranker with --rerank-model, beside an embedding model)"
        raise ConfigError(
            f"{getattr(model, 'model_id', model)!r} is a {kind} model; the service embeds with a "
            f"{', '.join(SERVED_KINDS)} model{hint if kind == 'rerank' else ''}"
        )
    return kind


@dataclass(eq=False)
class ServiceState:
    settings: ServerSettings
    model: Any
    batcher: MicroBatcher
    metrics: Metrics
    loop: asyncio.AbstractEventLoop
    highlighter: Any
    jobs: JobManager
    store_override: Any = None
    reranker: Any = None  # a loaded cross-encoder for /v1/rerank, when one was configured
    kind: str = "dense"  # the model's kind (model_kind): dense vectors take the batcher's path
    # Sparse and multivector inputs, and images, run in worker threads outside the batcher; at
    # most this many at once (the inference lanes), so they never oversubscribe the cores.
    kind_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # One rerank at a time: a request's pairs form one job on every inference thread.
    rerank_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    llm: Any = None  # the served LLM (server/_llm.py's LLMService), when --llm names one
    _stores: dict[str, Any] = field(default_factory=dict)
    _stores_lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self, collection: str | None = None) -> Any:
        """The store for ``collection`` (default: the configured one), opened once and kept.

        Called from worker threads: opening LanceDB touches the disk.
        """
        name = collection or self.settings.collection or "documents"
        if self.store_override is not None and name == (self.settings.collection or "documents"):
            return self.store_override
        with self._stores_lock:
            store = self._stores.get(name)
            if store is None:
                from ..errors import StoreError, StoreUnavailableError
                from ..stores import open_store

                uri = self.settings.store
                assert uri is not None
                # Read-only, whatever the store: the service never takes the writer's lock, so
                # ingest jobs (and other processes) can write while it answers searches.
                try:
                    store = open_store(uri, name, mode="r")
                except StoreUnavailableError:
                    raise
                except StoreError as exc:
                    raise APIError(
                        404,
                        f"collection {name!r} cannot be opened: {exc}",
                        param="collection",
                        code="collection_not_found",
                    ) from exc
                self._stores[name] = store
            return store

    def cached_store(self, collection: str | None = None) -> Any:
        """The store for ``collection`` if it is already open, else ``None`` (never opens one)."""
        name = collection or self.settings.collection or "documents"
        if self.store_override is not None and name == (self.settings.collection or "documents"):
            return self.store_override
        return self._stores.get(name)

    def forget_store(self, collection: str) -> None:
        """Drop a cached handle, so the next search reopens it (after an ingest job wrote to it)."""
        with self._stores_lock:
            store = self._stores.pop(collection, None)
        if store is not None:
            try:
                store.close()
            except Exception:  # closing a stale read handle must not fail the job that wrote
                log.debug("closing a stale store handle failed", exc_info=True)

    def close(self) -> None:
        with self._stores_lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            try:
                store.close()
            except Exception:
                log.warning("closing a store failed", exc_info=True)


__all__ = ["BatchedModel", "ServiceState", "model_kind"]
