"""``search``: embed a query, ask a store, return ranked hits (top-k or a DIPR range).

Range mode and ``alpha``. DESIGN.md defines the Dynamic Inner Product Range as every key with
``score >= best - beta``, and for attention ``beta = -sqrt(d) * ln(alpha)``: with softmax weights
``w_i ∝ exp(q·k_i / sqrt(d))``, ``w_i >= alpha * w_max`` is exactly that range. Search scores are
cosine similarities, and the softmax that ranks them is the one the model was trained with,
``w_i ∝ exp(s_i / tau)``, so the same derivation gives::

    beta = -tau * ln(alpha)        tau = 0.05 by default

``tau = 0.05`` is the temperature of sentence-transformers' default contrastive loss
(MultipleNegativesRankingLoss, scale 20), the softmax that such models' cosine scores are trained
under: ``alpha = 0.1`` gives ``beta ≈ 0.115``, ``alpha = 0.5`` gives ``beta ≈ 0.035``. The
attention formula is this one with ``tau = sqrt(d)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..config import load_settings
from ..errors import ConfigError
from ..stores import VectorStore, dipr_cut, open_store, scheme_of, validate_where
from ..types import Hit
from ._embedders import EMBEDDERS, QueryEmbedder

log = logging.getLogger("vectorstream.search")

DEFAULT_TEMPERATURE = 0.05
MODES = ("topk", "range")


def alpha_to_beta(alpha: float, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """The DIPR range width for "softmax weight >= ``alpha`` x the best weight"."""
    if not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be in (0, 1], got {alpha}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    return -temperature * math.log(alpha)


def _embedder(model: str | QueryEmbedder | None) -> QueryEmbedder:
    if model is None or isinstance(model, str):
        return EMBEDDERS.get(model or load_settings().model)
    if not isinstance(model, QueryEmbedder):
        raise ConfigError(
            f"model must be a spec string or an embedder with embed(), dim and model_id; "
            f"got {type(model).__name__}"
        )
    return model


def check_model(store: VectorStore, embedder: QueryEmbedder) -> None:
    """Refuse a query model other than the one the collection was built with."""
    models = getattr(store, "models", None)
    if not callable(models):
        return  # the adapter cannot tell; nothing to check against
    stored = set(models())
    if stored and embedder.model_id not in stored:
        raise ConfigError(
            f"collection {store.collection!r} at {store.uri} was built with "
            f"{', '.join(sorted(stored))} but the query model is {embedder.model_id}; "
            "search with the model the collection was built with (model=...)"
        )


def _query_vector(embedder: QueryEmbedder, query: str) -> np.ndarray:
    vectors = np.asarray(embedder.embed([query]), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != 1:
        raise ConfigError(
            f"the model returned an array of shape {vectors.shape} for one query; expected (1, dim)"
        )
    return vectors[0]


def search(
    query: str,
    *,
    store: str | VectorStore | None = None,
    collection: str | None = None,
    model: str | QueryEmbedder | None = None,
    k: int = 10,
    where: Mapping[str, Any] | None = None,
    mode: str = "topk",
    beta: float | None = None,
    alpha: float | None = None,
) -> list[Hit]:
    """Embed ``query`` and return the best hits from ``store``, best first.

    ``store``: a URI (opened read-only for this call and closed after) or an open store;
    ``None`` uses the configured store. ``collection`` and ``model`` default to the settings.
    ``where``: the shared filter mapping (``source``, ``page``, ``model``, ``chunk_index``,
    ``metadata.<key>``; a list means one of). ``mode="topk"``: the ``k`` nearest.
    ``mode="range"``: every hit within ``beta`` of the best score (DIPR), or within the range
    that ``alpha`` (a ratio of the best softmax weight, see the module doc) converts to; ``k``
    caps the number of hits in both modes.
    """
    if not isinstance(query, str) or not query.strip():
        raise ConfigError("the query must be a non-empty string")
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    width: float | None = None
    if mode == "range":
        if beta is not None and alpha is not None:
            raise ConfigError("give beta or alpha for a range search, not both")
        if beta is None and alpha is None:
            raise ConfigError("mode 'range' needs beta (a score range) or alpha (a weight ratio)")
        width = beta if beta is not None else alpha_to_beta(float(alpha or 0.0))
        if width < 0 or math.isnan(width):
            raise ConfigError(f"beta must be >= 0, got {width}")
    elif beta is not None or alpha is not None:
        raise ConfigError("beta and alpha apply to mode 'range' only")
    filters = validate_where(where) or None

    embedder = _embedder(model)
    if isinstance(store, VectorStore) and not isinstance(store, str):
        return _run(store, embedder, query, k, filters, width)
    settings = load_settings(store=store, collection=collection)
    # Read-only for the embedded store: a search never takes the writer's lock.
    options: dict[str, Any] = {"mode": "r"} if scheme_of(settings.store) == "lancedb" else {}
    opened = open_store(settings.store, settings.collection, **options)
    try:
        return _run(opened, embedder, query, k, filters, width)
    finally:
        opened.close()


def _run(
    store: VectorStore,
    embedder: QueryEmbedder,
    query: str,
    k: int,
    where: Mapping[str, Any] | None,
    beta: float | None,
) -> list[Hit]:
    check_model(store, embedder)
    vector = _query_vector(embedder, query)
    if beta is None:
        return store.search(vector, k, where)
    if store.capabilities.range_search:
        return store.range_search(vector, beta, limit=k, where=where)
    # A store without a native range query: the top k, cut to the range here.
    return dipr_cut(store.search(vector, k, where), beta)


__all__ = ["DEFAULT_TEMPERATURE", "MODES", "alpha_to_beta", "check_model", "search"]
