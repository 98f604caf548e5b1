"""Search: embed a query and ask a store for top-k hits or a DIPR range; highlights.

query ──embed (cached model)──▶ vector ──store.search / store.range_search──▶ list[Hit]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._embedders import EMBEDDERS, EmbedderCache, QueryEmbedder
from ._search import DEFAULT_TEMPERATURE, MODES, alpha_to_beta, check_model, search

if TYPE_CHECKING:
    from .highlights import (
        DocumentHighlights,
        Highlight,
        HighlightDocument,
        HighlightEngine,
        highlights,
    )

# The highlights engine lives in its own module (imported on first use: it is not needed to
# search a store).
_LAZY = ("DocumentHighlights", "Highlight", "HighlightDocument", "HighlightEngine", "highlights")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vectorstream.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(".highlights", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_TEMPERATURE",
    "EMBEDDERS",
    "MODES",
    "DocumentHighlights",
    "EmbedderCache",
    "Highlight",
    "HighlightDocument",
    "HighlightEngine",
    "QueryEmbedder",
    "alpha_to_beta",
    "check_model",
    "highlights",
    "search",
]
