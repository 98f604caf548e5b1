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
    "Calibration": "._calibrate",
    "ContextDB": "._contextdb",
    "Generation": "._generate",
    "KeyGraph": "._graph",
    "LayerCost": "._calibrate",
    "LayerStats": "._config",
    "Session": "._session",
    "SparseConfig": "._config",
    "StepStats": "._config",
    "allocate_alpha": "._calibrate",
    "calibrate_alpha": "._calibrate",
    "choose_mode": "._config",
    "forward": "._integration",
    "generate": "._generate",
    "measure_layer_costs": "._calibrate",
    "merge_partials": "._merge",
    "partial_attention": "._merge",
    "register": "._integration",
}
_NEEDS_TORCH = {"._calibrate", "._contextdb", "._generate", "._merge", "._session", "._integration"}

if TYPE_CHECKING:
    from ._calibrate import (
        Calibration,
        LayerCost,
        allocate_alpha,
        calibrate_alpha,
        measure_layer_costs,
    )
    from ._config import LayerStats, SparseConfig, StepStats, choose_mode
    from ._contextdb import ContextDB
    from ._generate import Generation, generate
    from ._graph import KeyGraph
    from ._integration import forward, register
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
    "Calibration",
    "ContextDB",
    "Generation",
    "KeyGraph",
    "LayerCost",
    "LayerStats",
    "Session",
    "SparseConfig",
    "StepStats",
    "allocate_alpha",
    "beta_from_alpha",
    "beta_from_tau",
    "calibrate_alpha",
    "choose_mode",
    "dipr",
    "forward",
    "generate",
    "measure_layer_costs",
    "merge_partials",
    "partial_attention",
    "register",
    "window_positions",
]
