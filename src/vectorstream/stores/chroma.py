"""Chroma adapter: a persistent folder (``chroma:PATH``) or a server (``chroma://HOST:PORT``).

Chroma keeps flat metadata (strings, numbers, booleans), so a record is stored the Chroma way:
the text as the document, our id as the id, and metadata keys ``source``, ``model``, ``page``
(absent when none), ``start_offset``, ``end_offset``, ``chunk_index``, ``section_index`` (absent
in records written before it existed: read as 0), ``headings`` (JSON text), ``metadata`` (the
record's metadata as JSON text, read back exactly) and one flat
``metadata.<key>`` per scalar metadata value, which filters use. The collection uses the cosine
space; Chroma returns distances, and the score is ``1 - distance``.

Side tables (the manifest) are Chroma collections ``<collection>__vs_<name>`` beside this one
(``_side_collections``). A persistent folder has one writer, guarded by a lock file; readers
(``mode="r"``: search, the server) never take it and answer while a writer in another process
works, and their side tables refuse writes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, RecordRejectedError, StoreError, StoreUnavailableError
from ..types import EmbeddingKind, Hit, Record
from ._common import (
    adaptive_range,
    as_query,
    check_k,
    flat_metadata,
    hit_of,
    host_port,
    last_wins,
    pop_mode,
    require,
    where_items,
)
from ._flock import WriterLock
from ._side_collections import (
    ChromaSideCollection,
    ReadOnlySideTable,
    refuse_side_marker,
    side_collection_name,
)
from .base import Query, SideTable, StoreCapabilities, Where

log = logging.getLogger("vectorstream.stores.chroma")

PAGE = 5000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


def _translate(exc: Exception, action: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    text = str(exc)
    low = text.lower()
    if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in (
        "ConnectError",
        "ConnectTimeout",
    ):
        return StoreUnavailableError(f"Chroma unavailable while trying to {action}: {text}")
    if "could not connect" in low or "connection refused" in low:
        return StoreUnavailableError(f"Chroma unavailable while trying to {action}: {text}")
    if "dimension" in low or "nan" in low or isinstance(exc, TypeError):
        return RecordRejectedError(f"Chroma rejected the records while trying to {action}: {text}")
    return StoreError(f"Chroma failed to {action}: {text}")


def _check_name(collection: str) -> None:
    if not NAME.match(collection):
        raise ConfigError(
            f"Chroma collection names have 3-512 characters from [a-zA-Z0-9._-], starting and "
            f"ending with a letter or digit: {collection!r}"
        )


class ChromaStore:
    """A Chroma collection as a ``VectorStore``."""

    capabilities = StoreCapabilities(filters=True, range_search=True)
    kind: EmbeddingKind = "dense"  # dense collections only (see docs/stores.md)

    def __init__(self, uri: str, collection: str, client: Any, *, readonly: bool = False) -> None:
        _check_name(collection)
        refuse_side_marker(collection, "Chroma")
        self.uri = uri
        self.collection = collection
        self._client = client
        self._col: Any = None
        self._lock: WriterLock | None = None
        self.dim: int | None = None
        self.readonly = readonly  # mode="r": no writer lock, and side tables refuse writes

    @classmethod
    def open(
        cls, uri: str, collection: str, *, dim: int | None = None, **options: Any
    ) -> ChromaStore:
        mode = pop_mode(options)
        lock: WriterLock | None = None
        chromadb = require("chromadb", "chromadb", "chroma")
        from chromadb.config import Settings

        # Never phone home: the library must work offline and quietly.
        settings = Settings(anonymized_telemetry=False)
        _, _, rest = uri.partition(":")
        try:
            if rest.startswith("//"):
                host, port = host_port(rest[2:], 8000)
                client = chromadb.HttpClient(host=host, port=port, settings=settings, **options)
            else:
                if not rest:
                    raise ConfigError("chroma:PATH needs a directory (or chroma://HOST:PORT)")
                if mode != "r":
                    # A persistent Chroma folder is not safe for two writing processes; readers
                    # (search, the server) open it beside a writer and never take the lock.
                    lock = WriterLock(
                        Path(os.path.expanduser(rest)) / "vectorstream.writer.lock",
                        f"Chroma folder {rest}",
                    )
                    lock.acquire()
                client = chromadb.PersistentClient(
                    path=os.path.expanduser(rest), settings=settings, **options
                )
        except Exception as exc:
            if lock is not None:
                lock.release()
            if isinstance(exc, ConfigError | StoreError):
                raise
            raise _translate(exc, f"open {uri!r}") from exc
        try:
            store = cls(uri, collection, client, readonly=mode == "r")
            store._lock = lock
            store._open(dim)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return store

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _translate(exc, action) from exc

    def _open(self, dim: int | None) -> None:
        names = {
            getattr(c, "name", c)
            for c in self._call("list collections", self._client.list_collections)
        }
        if self.collection in names:
            self._col = self._call(
                "open the collection", self._client.get_collection, self.collection
            )
            stored = (self._col.metadata or {}).get("vectorstream:dim")
            if stored is None:
                sample = self._col.get(limit=1, include=["embeddings"])
                embs = sample.get("embeddings")
                stored = len(embs[0]) if embs is not None and len(embs) else None
            if stored is not None and dim is not None and int(stored) != dim:
                raise ConfigError(
                    f"Chroma collection {self.collection!r} holds vectors of dimension {stored}, not {dim}"
                )
            self.dim = int(stored) if stored is not None else dim
        elif dim is not None:
            self._create(dim)

    def _create(self, dim: int) -> None:
        self._col = self._call(
            "create the collection",
            self._client.get_or_create_collection,
            self.collection,
            # Chroma has no dimension in its schema; we note it so a re-open can check it.
            metadata={"vectorstream:dim": dim},
            configuration={"hnsw": {"space": "cosine"}},
        )
        self.dim = dim

    def _where(self, where: Where | None) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = []
        for key, values in where_items(where):
            ors = [{key: {"$eq": v}} for v in values]
            clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    # -- protocol ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        batch = last_wins(records)
        if self._col is None:
            self._create(int(np.asarray(batch[0].embedding.as_dense()).shape[0]))
        step = int(self._call("read the batch limit", self._client.get_max_batch_size))
        for i in range(0, len(batch), step):
            part = batch[i : i + step]
            self._call(
                "upsert records",
                self._col.upsert,
                ids=[r.id for r in part],
                embeddings=np.stack(
                    [np.asarray(r.embedding.as_dense(), dtype=np.float32) for r in part]
                ),
                documents=[r.text for r in part],
                metadatas=[flat_metadata(r) for r in part],
            )

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        if (ids is None) == (source is None):
            raise ConfigError("delete takes either ids or source, not both or neither")
        if self._col is None:
            return 0
        if ids is not None:
            ids = list(ids)
            if not ids:
                return 0
            found = self._call("find records", self._col.get, ids=ids, include=[])["ids"]
        else:
            found = sorted(self.ids(source))
        if found:
            self._call("delete records", self._col.delete, ids=list(found))
        return len(found)

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        check_k(k)
        if self._col is None:
            return []
        q = as_query(vector, self.dim)
        res = self._call(
            "search",
            self._col.query,
            query_embeddings=[q],
            n_results=k,  # Chroma returns fewer when the collection holds fewer
            where=self._where(where),
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for rid, doc, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,
        ):
            hits.append(hit_of(rid, 1.0 - float(dist), {**(meta or {}), "text": doc}))
        return hits

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        # Chroma has no range query: widen a top-k search until it passes the DIPR bound.
        return adaptive_range(lambda k: self.search(vector, k, where), beta, limit)

    def ids(self, source: str | None = None) -> set[str]:
        if self._col is None:
            return set()
        where = {"source": {"$eq": source}} if source is not None else None
        out: set[str] = set()
        offset = 0
        while True:
            page = self._call(
                "list ids", self._col.get, where=where, include=[], limit=PAGE, offset=offset
            )
            out.update(page["ids"])
            if len(page["ids"]) < PAGE:
                return out
            offset += PAGE

    def count(self) -> int:
        return 0 if self._col is None else int(self._call("count records", self._col.count))

    def side_table(self, name: str) -> SideTable:
        """The side table ``name``: the Chroma collection ``<collection>__vs_<name>``."""
        table_name = side_collection_name(self.collection, name, max_bytes=512)
        _check_name(table_name)
        table = ChromaSideCollection(self._client, table_name, self._call, self.collection)
        if self.readonly:
            return ReadOnlySideTable(table, f"Chroma collection {self.collection!r}")
        return table

    def flush(self) -> None:
        """Chroma persists each call before it returns."""

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
        self._col = None
        # Only newer Chroma clients have close(); older ones release on garbage collection.
        closer = getattr(self._client, "close", None)
        if callable(closer):
            self._call("close", closer)

    def __enter__(self) -> ChromaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ChromaStore"]
