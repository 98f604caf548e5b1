"""``search``: embed a query, ask a store, return ranked hits (top-k or a DIPR range).

Range mode keeps every hit with ``score >= best - beta`` (the Dynamic Inner Product Range);
``alpha`` asks instead for every hit whose softmax weight is at least ``alpha`` times the best's,
which is the same range with ``beta = -T * ln(alpha)``. The rule and the conversion (with its
default temperature ``T = 0.05`` and why) live in ``vectorstream._dipr``, shared with the stores
and the attention module.

The query is embedded for the collection's kind (``store.kind``): with the model's
``embed_queries`` when it has one (sparse and multivector models embed queries their own way:
query markers, query augmentation), else with ``embed``; a query embedding of another kind than
the collection's is a ``ConfigError``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._dipr import DEFAULT_TEMPERATURE, alpha_to_beta, check_beta
from ..config import load_settings
from ..errors import ConfigError
from ..stores import VectorStore, dipr_cut, open_store, validate_where
from ..stores._common import check_k
from ..stores.base import Query
from ..types import Embedding, EmbeddingKind, Hit
from ._embedders import EMBEDDERS, QueryEmbedder

log = logging.getLogger("vectorstream.search")

MODES = ("topk", "range")


def range_width(mode: str, beta: float | None, alpha: float | None) -> float | None:
    """The DIPR width a search asks for (``None`` for top-k), or ``ConfigError`` if it cannot."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode != "range":
        if beta is not None or alpha is not None:
            raise ConfigError("beta and alpha apply to mode 'range' only")
        return None
    if beta is not None and alpha is not None:
        raise ConfigError("give beta or alpha for a range search, not both")
    if beta is None and alpha is None:
        raise ConfigError("mode 'range' needs beta (a score range) or alpha (a weight ratio)")
    return check_beta(beta) if beta is not None else alpha_to_beta(float(alpha or 0.0))


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


def _query_embedding(embedder: QueryEmbedder, query: str, kind: EmbeddingKind) -> Query:
    """The query embedded for a collection of ``kind`` (see the module doc)."""
    embed_queries = getattr(embedder, "embed_queries", None)
    if not callable(embed_queries):
        if kind != "dense":
            raise ConfigError(
                f"the collection holds {kind} embeddings but the model "
                f"{embedder.model_id!r} has no embed_queries() for {kind} queries; search "
                "with the model the collection was built with"
            )
        return _query_vector(embedder, query)
    out = embed_queries([query])
    if isinstance(out, np.ndarray):  # a dense model with its own query side (CLIP's texts)
        if out.ndim != 2 or out.shape[0] != 1:
            raise ConfigError(
                f"the model returned an array of shape {out.shape} for one query; expected (1, dim)"
            )
        got: Embedding = Embedding(dense=np.asarray(out[0], dtype=np.float32))
    else:
        items = list(out)
        if len(items) != 1 or not isinstance(items[0], Embedding):
            raise ConfigError(
                f"the model's embed_queries() gave {len(items)} items for one query; expected "
                "one Embedding"
            )
        got = items[0]
    if got.kind != kind:
        raise ConfigError(
            f"the model {embedder.model_id!r} makes {got.kind} query embeddings but the "
            f"collection holds {kind} ones; search with the model the collection was built with"
        )
    return got


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
    check_k(k)
    width = range_width(mode, beta, alpha)
    filters = validate_where(where) or None

    embedder = _embedder(model)
    if store is not None and not isinstance(store, str):
        # An open store: searched as it is (a structural check against the protocol would
        # refuse a store that answers searches but lacks an unrelated method).
        return _run(store, embedder, query, k, filters, width)
    settings = load_settings(store=store, collection=collection)
    # Read-only, whatever the store: a search never takes the writer's lock, so it answers while
    # an ingest (in this process or another) writes.
    opened = open_store(settings.store, settings.collection, mode="r")
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
    vector = _query_embedding(embedder, query, getattr(store, "kind", "dense"))
    if beta is None:
        return store.search(vector, k, where)
    if store.capabilities.range_search:
        return store.range_search(vector, beta, limit=k, where=where)
    # A store without a native range query: the top k, cut to the range here.
    return dipr_cut(store.search(vector, k, where), beta)


__all__ = [
    "DEFAULT_TEMPERATURE",
    "MODES",
    "alpha_to_beta",
    "check_model",
    "range_width",
    "search",
]
