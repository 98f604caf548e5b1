"""The pgvector adapter's connection: opening a session set up for vector search, and psycopg's
errors translated into ours.

A connection is in autocommit mode (every statement or explicit transaction commits when it
returns), has the ``vector`` extension created and its types registered, and carries the HNSW
search settings as session settings, so a search is one round trip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import RecordRejectedError, StoreError, StoreUnavailableError

log = logging.getLogger("vectorstream.stores.pgvector")

EF_SEARCH_MAX = 1000  # pgvector's bound on hnsw.ef_search


def translate(exc: Exception, action: str) -> StoreError:
    """Map a psycopg error to ours: connection trouble is transient, bad data is a rejection."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(f"PostgreSQL unavailable while trying to {action}: {exc}")
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        return RecordRejectedError(f"PostgreSQL rejected the batch while trying to {action}: {exc}")
    return StoreError(f"PostgreSQL failed to {action}: {exc}")


def dsn_of(uri: str) -> str:
    """The libpq connection string of a store URI (``pgvector:`` is an alias of ``postgresql:``)."""
    return "postgresql" + uri[uri.index(":") :] if uri.startswith("pgvector:") else uri


def safe_uri(uri: str) -> str:
    """The URI without its credentials, for messages: never log a password."""
    head, at, tail = uri.rpartition("@")
    return f"{head.split('://')[0]}://…@{tail}" if at else uri


@dataclass(frozen=True, slots=True)
class Session:
    """An open connection and what its server's pgvector offers."""

    conn: Any
    iterative_scan: bool  # pgvector >= 0.8: filtered HNSW scans walk on until k rows pass


def connect(psycopg: Any, uri: str, *, ef_search: int, connect_timeout: float) -> Session:
    """Connect to ``uri`` and set the session up; ``StoreUnavailableError`` when unreachable."""
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(
            dsn_of(uri), autocommit=True, connect_timeout=max(1, int(connect_timeout))
        )
    except psycopg.Error as exc:
        raise StoreUnavailableError(
            f"cannot connect to PostgreSQL at {safe_uri(uri)}: {exc}"
        ) from exc
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        iterative_scan = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        # Session settings, so a search is one round trip. Iterative scans (pgvector >= 0.8)
        # keep walking the graph until k rows pass a filter; unfiltered queries never need it.
        conn.execute(f"SET hnsw.ef_search = {int(min(EF_SEARCH_MAX, ef_search))}")
        if iterative_scan:
            conn.execute("SET hnsw.iterative_scan = strict_order")
    except psycopg.Error as exc:
        conn.close()
        raise translate(exc, "enable the pgvector extension") from exc
    return Session(conn, iterative_scan)


def close_quietly(psycopg: Any, conn: Any) -> None:
    """Close a connection that may be broken already; a failure there changes nothing."""
    try:
        conn.close()
    except psycopg.Error:
        log.debug("closing a broken connection failed", exc_info=True)


__all__ = [
    "EF_SEARCH_MAX",
    "Session",
    "close_quietly",
    "connect",
    "dsn_of",
    "safe_uri",
    "translate",
]
