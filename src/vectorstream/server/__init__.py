"""The HTTP service: OpenAI-compatible embeddings, search, highlights, ingest jobs, metrics, a page.

    from vectorstream.server import ServerSettings, create_app
    app = create_app(ServerSettings(store="lancedb://./index"))   # any ASGI server runs it

``vectorstream serve`` runs it with uvicorn. Routes, limits, metrics and environment variables are
described in ``docs/server.md``.
"""

from __future__ import annotations

from .app import create_app, metrics_of
from .batcher import BatchStats, MicroBatcher, QueueFullError
from .settings import ServerSettings, server_settings_from_env

__all__ = [
    "BatchStats",
    "MicroBatcher",
    "QueueFullError",
    "ServerSettings",
    "create_app",
    "metrics_of",
    "server_settings_from_env",
]
