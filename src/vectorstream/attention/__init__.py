"""The KV cache as a vector database: DIPR sparse attention and context reuse.

``dipr`` and the β conversions need only numpy; ``Session``, ``ContextDB``, ``generate`` and
``register`` need torch and transformers (``pip install 'vectorstream[attention]'``) and are imported
on first use, so ``import vectorstream.attention`` itself stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._dipr import beta_from_alpha, beta_from_tau, dipr, window_positions

_LAZY: dict[str, str] = {
    "ContextDB": "._contextdb",
    "Generation": "._generate",
    "KeyGraph": "._graph",
    "LayerStats": "._config",
    "Session": "._session",
    "SparseConfig": "._config",
    "StepStats": "._config",
    "choose_mode": "._config",
    "generate": "._generate",
    "merge_partials": "._merge",
    "partial_attention": "._merge",
    "register": "._integration",
}
_NEEDS_TORCH = {"._contextdb", "._generate", "._merge", "._session", "._integration"}

if TYPE_CHECKING:
    from ._config import LayerStats, SparseConfig, StepStats, choose_mode
    from ._contextdb import ContextDB
    from ._generate import Generation, generate
    from ._graph import KeyGraph
    from ._integration import register
    from ._merge import merge_partials, partial_attention
    from ._session import Session


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vectorstream.attention' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ImportError as exc:
        if module in _NEEDS_TORCH and exc.name in {"torch", "transformers"}:
            from ..errors import MissingDependencyError

            raise MissingDependencyError(exc.name, "attention") from exc
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ContextDB",
    "Generation",
    "KeyGraph",
    "LayerStats",
    "Session",
    "SparseConfig",
    "StepStats",
    "beta_from_alpha",
    "beta_from_tau",
    "choose_mode",
    "dipr",
    "generate",
    "merge_partials",
    "partial_attention",
    "register",
    "window_positions",
]
