"""Search: embed a query and ask a store for top-k hits or a DIPR range; highlights.

query ──embed (cached model)──▶ vector ──store.search / store.range_search──▶ list[Hit]
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _CallableModule(types.ModuleType):
    """Makes ``vectorstream.search(...)`` work even after this subpackage was imported.

    Importing ``vectorstream.search`` binds the *module* to the package attribute ``search``,
    shadowing the function that ``vectorstream.__getattr__`` would otherwise return; calling the
    module calls the function, so both spellings of the public API keep working.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

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
