"""Loaded query embedders, kept in a small thread-safe LRU so repeated searches never reload.

Loading a model costs seconds (reading weights, maybe exporting an ONNX graph); a query costs
milliseconds. The cache is keyed by the model spec; at most ``capacity`` models stay loaded.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("vectorstream.search.embedders")


@runtime_checkable
class QueryEmbedder(Protocol):
    """What search needs from a model: ``embed`` texts to an ``(n, dim)`` array, and its ids.

    A model may also have ``embed_queries(texts)`` (sparse and multivector models do: a list of
    ``Embedding``); search then embeds queries with it, for a collection of the model's kind.
    """

    dim: int
    model_id: str

    def embed(self, texts: Iterable[str]) -> np.ndarray: ...


Loader = Callable[[str], QueryEmbedder]


def _load_with_models(spec: str) -> QueryEmbedder:
    from ..models import load_model

    embedder: QueryEmbedder = load_model(spec)
    return embedder


class EmbedderCache:
    """An LRU of loaded embedders keyed by spec. A spec is loaded once even under concurrency."""

    def __init__(self, capacity: int = 4, loader: Loader | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._loader = loader or _load_with_models
        self._items: OrderedDict[str, QueryEmbedder] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # how many times the loader ran (observable in tests)

    def get(self, spec: str) -> QueryEmbedder:
        with self._lock:
            if spec in self._items:
                self._items.move_to_end(spec)
                return self._items[spec]
            spec_lock = self._loading.setdefault(spec, threading.Lock())
        # Load outside the cache lock (other specs stay available), but once per spec.
        with spec_lock:
            with self._lock:
                if spec in self._items:
                    self._items.move_to_end(spec)
                    return self._items[spec]
            log.info("loading query model %s", spec)
            embedder = self._loader(spec)
            with self._lock:
                self.loads += 1
                self._items[spec] = embedder
                self._items.move_to_end(spec)
                while len(self._items) > self.capacity:
                    evicted, _ = self._items.popitem(last=False)
                    log.debug("evicted query model %s", evicted)
                self._loading.pop(spec, None)
            return embedder

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


EMBEDDERS = EmbedderCache()

__all__ = ["EMBEDDERS", "EmbedderCache", "QueryEmbedder"]
