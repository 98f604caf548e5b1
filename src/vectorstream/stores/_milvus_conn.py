"""The Milvus adapter's connection: the client a store URI names, Milvus Lite's per-process
server, and pymilvus errors translated into ours.

``milvus://HOST:PORT`` is a server; ``milvus:PATH.db`` a Milvus Lite file, which pymilvus serves
from a thread of this process. Stores of one process share that server: the last of them to close
stops it, so the file is closed cleanly and another process can open it. One writer per file: a
writer takes an ``flock`` beside it, and a file another process serves is named in the error with
the way to share it (``milvus-lite server``).
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
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

# Stores open on each Milvus Lite file in this process: the last to close stops its server.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def translate(exc: Exception, action: str) -> StoreError:
    """Map a pymilvus (or transport) error to ours."""
    if isinstance(exc, StoreError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name in ("MilvusUnavailableException", "RpcError", "_InactiveRpcError") or isinstance(
        exc, ConnectionError | TimeoutError
    ):
        return StoreUnavailableError(f"Milvus unavailable while trying to {action}: {text}")
    low = text.lower()
    if name in ("DataNotMatchException", "DataTypeNotMatchException", "ParamError") or any(
        w in low
        for w in ("dimension", "dim mismatch", "exceeds max length", "nan", "invalid input")
    ):
        return RecordRejectedError(f"Milvus rejected the records while trying to {action}: {text}")
    if "connect" in low or "unavailable" in low or "deadline exceeded" in low:
        return StoreUnavailableError(f"Milvus unavailable while trying to {action}: {text}")
    return StoreError(f"Milvus failed to {action}: {text}")


def needs_load(exc: Exception) -> bool:
    """Milvus' answer for a collection that exists but is not loaded (code 101)."""
    return getattr(exc, "code", None) == 101 or "call load()" in str(exc)


def lite_held_elsewhere(target: str) -> bool:
    """Whether another process holds Milvus Lite's own lock on the data folder ``target``.

    Milvus Lite serves a file from inside one process and locks it (``flock`` on ``LOCK`` in
    the folder); when the lock is taken, pymilvus only says "Open local milvus failed".
    """
    with _LITE_LOCK:
        if target in _LITE_USERS:
            return False  # this process serves it (and so holds the lock)
    path = os.path.join(target, "LOCK")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lite_locked(target: str) -> StoreLockedError:
    return StoreLockedError(
        f"another process holds the Milvus Lite file {target}; Milvus Lite serves a file to one "
        "process at a time, readers included: for concurrent access serve it (milvus-lite "
        f"server --data-dir {target} --port PORT, or use a Milvus server) and use "
        "milvus://HOST:PORT"
    )


def lite_opened(target: str) -> None:
    """Count one more store of this process on the Milvus Lite file ``target``."""
    with _LITE_LOCK:
        _LITE_USERS[target] = _LITE_USERS.get(target, 0) + 1


def lite_closed(target: str) -> bool:
    """Count one store fewer on ``target``; whether it was the last (its server may stop)."""
    with _LITE_LOCK:
        left = _LITE_USERS.get(target, 1) - 1
        if left > 0:
            _LITE_USERS[target] = left
            return False
        _LITE_USERS.pop(target, None)
    return True


@dataclass(frozen=True, slots=True)
class Connection:
    """A connected client, the Milvus Lite file it serves (``None``: a server), a writer's lock."""

    client: Any
    lite_path: str | None
    lock: WriterLock | None


def connect(pymilvus: Any, uri: str, mode: str | None, options: dict[str, Any]) -> Connection:
    """The client ``uri`` names (``options`` go to ``MilvusClient``); a Milvus Lite writer holds
    the file's writer lock, which the caller releases on close."""
    _, _, rest = uri.partition(":")
    lock: WriterLock | None = None
    if rest.startswith("//"):
        host, port = host_port(rest[2:], 19530)
        target = f"http://{host}:{port}"
        lite = False
    else:
        if not rest:
            raise ConfigError("milvus:PATH needs a file path ending in .db (or milvus://HOST:PORT)")
        require("milvus_lite", "milvus-lite", "milvus")
        target = os.path.abspath(os.path.expanduser(rest))
        if not target.endswith(".db"):
            raise ConfigError(f"a Milvus Lite path must end in .db, got {rest!r}")
        lite = True
        if mode != "r":
            # Stores of one process share its Milvus Lite server: one writer among them.
            lock = WriterLock(Path(target + ".writer.lock"), f"Milvus Lite file {target}")
            try:
                lock.acquire()
            except StoreLockedError as exc:
                if lite_held_elsewhere(target):
                    raise lite_locked(target) from exc
                raise
    try:
        client = pymilvus.MilvusClient(uri=target, **options)
    except Exception as exc:
        if lock is not None:
            lock.release()
        if lite and lite_held_elsewhere(target):
            raise lite_locked(target) from exc
        raise translate(exc, f"connect to {uri!r}") from exc
    return Connection(client, target if lite else None, lock)


def release_lite(target: str) -> None:
    """Stop this process's Milvus Lite server of ``target``: the file is closed cleanly, so
    another process can open it and nothing waits for interpreter exit."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(target)


__all__ = [
    "Connection",
    "connect",
    "lite_closed",
    "lite_held_elsewhere",
    "lite_locked",
    "lite_opened",
    "needs_load",
    "release_lite",
    "translate",
]
