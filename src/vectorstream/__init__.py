"""vectorstream: stream documents into vectors.

Parse, chunk, embed and store concurrently in bounded memory; search, highlights and an
OpenAI-compatible embeddings service over the same library.

The heavy parts (ONNX Runtime, LanceDB, torch) are imported on first use, so ``import
vectorstream`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ChunkingError,
    ConfigError,
    MissingDependencyError,
    ModelError,
    ParseError,
    PipelineError,
    RecordRejectedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
    UnsupportedFormatError,
    VectorstreamError,
)
from .types import Chunk, Embedding, Hit, Record, Section, Source, SparseVector

__version__ = "0.1.0"

# Public name -> module that defines it (imported lazily).
_LAZY: dict[str, str] = {
    "Embedder": "vectorstream.models",
    "load_model": "vectorstream.models",
    "open_store": "vectorstream.stores",
    "VectorStore": "vectorstream.stores",
    "ingest": "vectorstream.pipeline",
    "IngestReport": "vectorstream.pipeline",
    "Pipeline": "vectorstream.pipeline",
    "PipelineOptions": "vectorstream.pipeline",
    "search": "vectorstream.search",
    "highlights": "vectorstream.search",
}

if TYPE_CHECKING:
    from .models import Embedder, load_model
    from .pipeline import IngestReport, Pipeline, PipelineOptions, ingest
    from .search import highlights, search
    from .stores import VectorStore, open_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vectorstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Chunk",
    "ChunkingError",
    "ConfigError",
    "Embedder",
    "Embedding",
    "Hit",
    "IngestReport",
    "MissingDependencyError",
    "ModelError",
    "ParseError",
    "Pipeline",
    "PipelineError",
    "PipelineOptions",
    "Record",
    "RecordRejectedError",
    "Section",
    "Source",
    "SparseVector",
    "StoreError",
    "StoreLockedError",
    "StoreUnavailableError",
    "UnsupportedFormatError",
    "VectorStore",
    "VectorstreamError",
    "__version__",
    "highlights",
    "ingest",
    "load_model",
    "open_store",
    "search",
]
