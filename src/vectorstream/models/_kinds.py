"""Model kinds: which one a folder is, and the module that loads each.

Dense text models are :class:`~vectorstream.models.Embedder`; every other kind lives in its own
module with a ``detect_<kind>(path)`` and a ``load_<kind>(path, model_id, ...)`` (see those modules).
A folder's own files name its kind where they can (sentence-transformers module lists, a CLIP
config, a cross-encoder config); where they cannot (a plain ``BertForMaskedLM`` may be a SPLADE),
the caller names it: ``load_model(spec, kind="sparse")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MODEL_KINDS: tuple[str, ...] = ("dense", "sparse", "multivector", "image", "rerank")

# kind -> (module, detect function, load function); dense is the Embedder, loaded in __init__.
_MODULES: dict[str, tuple[str, str, str]] = {
    "image": ("._clip", "detect_image", "load_image"),
    "rerank": ("._rerank", "detect_rerank", "load_rerank"),
    "multivector": ("._colbert", "detect_multivector", "load_multivector"),
    "sparse": ("._sparse", "detect_sparse", "load_sparse"),
}
# Detection order: the most specific files first (a ColBERT folder also has a Transformer module).
_DETECT_ORDER = ("image", "rerank", "multivector", "sparse")


def check_kind(kind: str | None) -> str | None:
    """``kind`` normalised, or a ``ConfigError`` naming the kinds there are."""
    if kind is None:
        return None
    name = kind.strip().lower()
    if name not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; choose one of: {', '.join(MODEL_KINDS)}")
    return name


def _function(kind: str, index: int) -> Callable[..., Any] | None:
    module_name, *names = _MODULES[kind]
    try:
        module = importlib.import_module(module_name, __package__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}{module_name}":
            raise
        return None  # a kind this build does not have
    function: Callable[..., Any] = getattr(module, names[index])
    return function


def detect_kind(path: Path) -> str:
    """The kind a model folder's own files name; ``"dense"`` when none says otherwise."""
    for kind in _DETECT_ORDER:
        detect = _function(kind, 0)
        if detect is not None and detect(path):
            return kind
    return "dense"


def loader(kind: str) -> Callable[..., Any]:
    """The ``load_<kind>`` function of a non-dense kind."""
    load = _function(kind, 1)
    if load is None:
        raise ConfigError(f"this build of vectorstream cannot load {kind} models")
    return load


__all__ = ["MODEL_KINDS", "check_kind", "detect_kind", "loader"]
