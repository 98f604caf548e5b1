"""numba, when the ``attention`` extra installed it: the one place the compiled kernels get it.

``jit(func, **options)`` compiles ``func`` on first use (cached on disk, the GIL released) when
numba is there, and returns ``func`` itself otherwise, so every kernel also runs as plain Python.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

log = logging.getLogger("vectorstream.attention.compiled")

try:
    _numba: Any = importlib.import_module("numba")
except ImportError:  # the compiled kernels are optional
    _numba = None
    log.debug("numba is not installed: the attention kernels run as Python/numpy")

AVAILABLE = _numba is not None

__all__ = ["AVAILABLE", "jit"]

_F = TypeVar("_F", bound=Callable[..., Any])


def jit(func: _F, **options: Any) -> _F:
    """``numba.njit(cache=True, nogil=True, **options)(func)``, or ``func`` without numba."""
    if _numba is None:
        return func
    return cast(_F, _numba.njit(cache=True, nogil=True, **options)(func))
