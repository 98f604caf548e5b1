"""The Qdrant adapter's connection: the backend a store URI names, and vendor errors translated
into ours.

``qdrant://HOST:PORT`` is a server and ``qdrant:PATH`` (or ``qdrant::memory:``) qdrant-client's
local mode, both through ``_qdrant_client``; ``qdrant-edge:PATH`` an in-process Qdrant Edge shard
(``_qdrant_edge``), whose single writer holds an ``flock`` so a second one fails now rather than
corrupting the shard later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import (
    ConfigError,
    RecordRejectedError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from ._common import host_port, require
from ._flock import WriterLock
from ._qdrant_client import ClientBackend
from ._qdrant_edge import EdgeBackend


def translate(exc: Exception, action: str) -> StoreError:
    """Map qdrant-client / qdrant-edge / transport errors to ours."""
    if isinstance(exc, StoreError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name == "UnexpectedResponse":
        status = int(getattr(exc, "status_code", 0) or 0)
        if status in (400, 422):
            return RecordRejectedError(f"Qdrant rejected the request to {action}: {text}")
        if status in (408, 429) or status >= 500:
            return StoreUnavailableError(
                f"Qdrant unavailable ({status}) while trying to {action}: {text}"
            )
        return StoreError(f"Qdrant failed to {action} ({status}): {text}")
    if name in (
        "ResponseHandlingException",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RpcError",
    ):
        return StoreUnavailableError(f"Qdrant unavailable while trying to {action}: {text}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return StoreUnavailableError(f"Qdrant unavailable while trying to {action}: {text}")
    if "already accessed by another instance" in text:
        # Local mode serves a folder to one client at a time, readers included.
        return StoreLockedError(
            f"another process (or another open store in this one) holds the Qdrant local-mode "
            f"folder while trying to {action}; local mode serves a folder to one client at a "
            "time, readers included: for concurrent access run a Qdrant server and use "
            "qdrant://HOST:PORT"
        )
    if isinstance(exc, ValueError) and (
        "dimension" in text.lower() or "wrong input" in text.lower()
    ):
        return RecordRejectedError(f"Qdrant rejected the records while trying to {action}: {text}")
    return StoreError(f"Qdrant failed to {action}: {text}")


def _backend(
    uri: str, collection: str, mode: str | None, options: dict[str, Any]
) -> tuple[Any, WriterLock | None]:
    """The backend of ``uri``; an Edge writer's lock is held (and returned) once it is taken."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "qdrant-edge":
        edge = require("qdrant_edge", "qdrant-edge-py", "qdrant")
        if not rest:
            raise ConfigError("qdrant-edge:PATH needs a directory")
        root = os.path.expanduser(rest.removeprefix("//"))
        lock: WriterLock | None = None
        if mode != "r":
            # An Edge shard has one writer: a second one fails now, not corrupts later.
            lock = WriterLock(
                Path(root) / f"{collection}.writer.lock",
                f"Qdrant Edge collection {collection!r} at {root}",
            )
            lock.acquire()
        try:
            return EdgeBackend(edge, root, collection), lock
        except Exception:
            if lock is not None:
                lock.release()
            raise
    qc = require("qdrant_client", "qdrant-client", "qdrant")
    models = require("qdrant_client.models", "qdrant-client", "qdrant")
    if rest.startswith("//"):
        host, port = host_port(rest[2:], 6333)
        # The version check runs in a background thread that only logs; skip it.
        options.setdefault("check_compatibility", False)
        client = qc.QdrantClient(host=host, port=port, **options)
        return ClientBackend(client, models, collection, server=True), None
    if not rest:
        raise ConfigError("qdrant:PATH needs a directory (or qdrant://HOST:PORT)")
    if rest == ":memory:":  # qdrant::memory: — local mode without persistence
        client = qc.QdrantClient(location=":memory:", **options)
    else:
        client = qc.QdrantClient(path=os.path.expanduser(rest), **options)
    return ClientBackend(client, models, collection, server=False), None


def open_backend(
    uri: str, collection: str, mode: str | None, options: dict[str, Any]
) -> tuple[Any, WriterLock | None]:
    """The backend ``uri`` names and, for an Edge writer, its lock (the caller releases it).

    ``options`` left over from the adapter's own go to ``QdrantClient``. Errors are ours.
    """
    try:
        return _backend(uri, collection, mode, options)
    except (ConfigError, StoreError, ImportError):
        raise
    except Exception as exc:
        raise translate(exc, f"open {uri!r}") from exc


__all__ = ["open_backend", "translate"]
