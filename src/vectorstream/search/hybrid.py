"""Hybrid search: the ranked lists of several searches (dense and sparse, say) fused into one.

Reciprocal rank fusion scores a hit by ``sum(1 / (rrf_k + rank))`` over the lists it appears in
(rank from 1), so lists whose scores live on different scales (cosine, SPLADE dot products) combine
without calibration; ``rrf_k = 60`` is the constant of the original paper. Hits are the same
passage when their source and character span are: collections of two models over one corpus with
the same chunking then line up even though their record ids differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..stores._common import check_k
from ..types import Hit
from ._search import search

RRF_K = 60


def _key(hit: Hit) -> tuple[str, int, int]:
    return (hit.source, hit.start, hit.end)


def fuse(lists: Sequence[Sequence[Hit]], *, k: int = 10, rrf_k: int = RRF_K) -> list[Hit]:
    """One ranking from several, by reciprocal rank fusion, best first; ``score`` becomes the
    fused score and each hit's ``metadata["ranks"]`` lists its rank in every input (None: absent)."""
    check_k(k)
    if rrf_k < 1:
        raise ConfigError(f"rrf_k must be >= 1, got {rrf_k}")
    scores: dict[tuple[str, int, int], float] = {}
    first: dict[tuple[str, int, int], Hit] = {}
    ranks: dict[tuple[str, int, int], list[int | None]] = {}
    for n, hits in enumerate(lists):
        for rank, hit in enumerate(hits, start=1):
            key = _key(hit)
            if key in ranks and ranks[key][n] is not None:
                continue  # the same passage twice in one list counts once, at its best rank
            scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
            first.setdefault(key, hit)
            ranks.setdefault(key, [None] * len(lists))[n] = rank
    order = sorted(scores, key=lambda key: (-scores[key], key))
    return [
        dataclasses.replace(
            first[key], score=scores[key], metadata={**first[key].metadata, "ranks": ranks[key]}
        )
        for key in order[:k]
    ]


def hybrid_search(
    query: str,
    searches: Sequence[Mapping[str, Any]],
    *,
    k: int = 10,
    candidates: int = 50,
    rrf_k: int = RRF_K,
) -> list[Hit]:
    """Run one :func:`~vectorstream.search.search` per mapping of its arguments (``store``,
    ``collection``, ``model``, ``where``), ``candidates`` hits each, and fuse them.

        hybrid_search("deep copy", [
            {"store": "lancedb://./idx", "collection": "dense", "model": "minilm"},
            {"store": "lancedb://./idx", "collection": "sparse", "model": SPLADE_FOLDER},
        ])
    """
    if len(searches) < 2:
        raise ConfigError("hybrid search fuses at least two searches")
    check_k(candidates)
    allowed = {"store", "collection", "model", "where"}
    lists = []
    for i, arguments in enumerate(searches):
        unknown = set(arguments) - allowed
        if unknown:
            raise ConfigError(
                f"search {i}: unknown arguments {sorted(unknown)}; use {sorted(allowed)}"
            )
        lists.append(search(query, k=max(k, candidates), **arguments))
    return fuse(lists, k=k, rrf_k=rrf_k)


__all__ = ["RRF_K", "fuse", "hybrid_search"]
