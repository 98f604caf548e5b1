"""Reranking search hits with a cross-encoder: the store's top N, scored again as pairs.

A vector search compares a query and a chunk that were embedded apart; a cross-encoder reads them
together, so it orders the first N candidates better, at the cost of one model pass per pair.
Hits keep everything they had (source, offsets, metadata); ``score`` becomes the reranker's and
the vector search's score moves to ``metadata["vector_score"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..types import Hit


def load_reranker(spec: str, **options: Any) -> Any:
    """A reranker from a model spec (a cross-encoder folder, hub id or alias)."""
    from ..models import load_model

    return load_model(spec, kind="rerank", options=options or None)


def rerank_hits(
    query: str, hits: Sequence[Hit], reranker: Any, *, top_n: int | None = None
) -> list[Hit]:
    """``hits`` ordered by ``reranker`` (best first), the first ``top_n`` of them.

    Hits without text (image hits) cannot be read as pairs and keep their order after the rest.
    """
    if top_n is not None and top_n < 1:
        raise ConfigError(f"top_n must be >= 1, got {top_n}")
    if getattr(reranker, "kind", None) != "rerank":
        raise ConfigError(f"{getattr(reranker, 'model_id', reranker)!r} is not a reranker")
    readable = [h for h in hits if h.text.strip()]
    rest = [h for h in hits if not h.text.strip()]
    ranked = reranker.rerank(query, [h.text for h in readable]) if readable else []
    out = [
        dataclasses.replace(
            readable[r.index],
            score=float(r.score),
            metadata={**readable[r.index].metadata, "vector_score": readable[r.index].score},
        )
        for r in ranked
    ]
    out.extend(rest)
    return out[:top_n] if top_n is not None else out


__all__ = ["load_reranker", "rerank_hits"]
