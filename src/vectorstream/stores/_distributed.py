"""Writes from many processes (Ray workers) into one collection, settled by one driver.

    driver:  plan = remote_writes(store, uri, collection)   refuses, before any work, a store
                                                             that cannot take such writes
    worker:  plan.writer.write(records, policy) -> Written  (pickles; opens its own connection)
    driver:  plan.commit(staged) -> None                    makes staged writes visible
             plan.settle({source: ids}) -> deleted           removes every other record of those
                                                             sources (stale and duplicate ones)
             plan.discard(ids) -> deleted                    removes records of failed sources

A store with a server takes upserts from every worker: idempotent by record id and visible at
once, so ``commit`` has nothing to do. LanceDB (``_lance_fragments``) has the workers write data
files only, and the driver commits them in one transaction per commit interval.

Embedded single-writer stores (a Qdrant or Milvus Lite file, a Chroma folder, the file sinks) are
never written by two processes: :func:`remote_writes` refuses them, naming what works instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigError
from ..types import Record
from .retry import RetryPolicy, write_with_retry

log = logging.getLogger("vectorstream.stores.distributed")

# Adapters whose every URI names a server that arbitrates concurrent writers.
_SERVERS = frozenset({"pgvector", "elasticsearch", "opensearch", "weaviate", "pinecone"})
# Adapters where ``scheme://HOST:PORT`` is a server and ``scheme:PATH`` an embedded file.
_SERVER_OR_FILE = frozenset({"qdrant", "milvus", "chroma"})


@dataclass(frozen=True, slots=True)
class WriteReceipt:
    """What one worker's write did: the ids it wrote as (source, id), the rejected ones as
    (source, id, reason), and what the driver's commit needs (``None``: nothing, already
    visible; otherwise the receipt holds one source's records)."""

    ids: tuple[tuple[str, str], ...]
    rejected: tuple[tuple[str, str, str], ...] = ()
    staged: Any = None

    @property
    def sources(self) -> set[str]:
        return {s for s, _ in self.ids} | {s for s, _, _ in self.rejected}


class BlockWriter(Protocol):
    """The worker side: pickles to the workers, opens what it needs there once per process."""

    def write(self, records: Sequence[Record], policy: RetryPolicy) -> list[WriteReceipt]: ...


class RemoteWrites(Protocol):
    """The driver side of one run's distributed writes."""

    @property
    def writer(self) -> BlockWriter: ...

    def commit(self, staged: Sequence[Any]) -> None: ...

    def settle(self, sources: Mapping[str, set[str]]) -> int: ...

    def discard(self, ids: Sequence[str]) -> int: ...


# -- stores with a server ----------------------------------------------------------------------

_OPEN: dict[tuple[str, str, str], Any] = {}
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class UpsertWriter:
    """Upserts through the adapter, the store opened once per worker process."""

    uri: str
    collection: str
    kind: str
    dim: int

    def _store(self) -> Any:
        key = (self.uri, self.collection, self.kind)
        with _OPEN_LOCK:
            store = _OPEN.get(key)
            if store is None:
                from . import open_store

                store = open_store(self.uri, self.collection, dim=self.dim, kind=self.kind)
                _OPEN[key] = store
            return store

    def write(self, records: Sequence[Record], policy: RetryPolicy) -> list[WriteReceipt]:
        if not records:
            return []
        result = write_with_retry(self._store(), list(records), policy)
        source_of = {r.id: r.source for r in records}
        refused = {rid for rid, _ in result.rejected}
        return [
            WriteReceipt(
                tuple((r.source, r.id) for r in records if r.id not in refused),
                tuple((source_of[rid], rid, why) for rid, why in result.rejected),
            )
        ]


class UpsertWrites:
    """A store with a server: workers upsert, the driver settles with the adapter's queries."""

    def __init__(self, store: Any, uri: str, collection: str) -> None:
        self.store = store
        self.writer = UpsertWriter(uri, collection, store.kind, store.dim)

    def commit(self, staged: Sequence[Any]) -> None:
        """Nothing to do: every upsert was visible when the worker's write returned."""

    def settle(self, sources: Mapping[str, set[str]]) -> int:
        deleted = 0
        for uri, keep in sources.items():
            stale = sorted(self.store.ids(source=uri) - keep)
            if stale:
                deleted += self.store.delete(ids=stale)
        return deleted

    def discard(self, ids: Sequence[str]) -> int:
        return int(self.store.delete(ids=list(ids))) if ids else 0


def remote_writes(store: Any, uri: str, collection: str) -> RemoteWrites:
    """How workers on other processes or machines write into ``store``; ``ConfigError`` for a
    store that cannot take it (before any work starts)."""
    from . import store_kind

    name = store_kind(uri).name
    if name == "lancedb":
        from ._lance_fragments import LanceFragmentWrites

        return LanceFragmentWrites(store)
    if name in _SERVERS or (name in _SERVER_OR_FILE and uri.partition(":")[2].startswith("//")):
        return UpsertWrites(store, uri, collection)
    if name in _SERVER_OR_FILE:
        raise ConfigError(
            f"{uri!r} is an embedded {name} store, written by one process at a time; the Ray "
            f"engine writes from many workers: serve it ({name}://HOST:PORT), or use LanceDB "
            "on a path every node sees, or --engine local"
        )
    raise ConfigError(
        f"the {name} store {uri!r} is a file one process writes; the Ray engine writes from "
        "many workers: use LanceDB on a path every node sees, a database server, or --engine local"
    )


__all__ = [
    "BlockWriter",
    "RemoteWrites",
    "UpsertWriter",
    "UpsertWrites",
    "WriteReceipt",
    "remote_writes",
]
