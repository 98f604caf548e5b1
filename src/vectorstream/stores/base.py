"""The ``VectorStore`` protocol every adapter implements, and the filter language they share.

Filters (``where``) are a mapping combined with AND. Keys are ``source``, ``page``, ``model``,
``chunk_index`` or ``metadata.<key>``; a scalar value means equality, a list/tuple means "one of".
Every adapter translates this mapping into its own query language, so a filter means the same
thing in every store.

Scores returned by ``search`` are similarities, higher is better: cosine similarity for dense
collections, the dot product for sparse ones, MaxSim for multivector ones (``_kinds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._dipr import check_beta, within
from ..errors import ConfigError
from ..types import Embedding, EmbeddingKind, Hit, Record

Where = Mapping[str, Any]

# What a search takes: a dense vector, or an ``Embedding`` of the collection's kind.
Query = np.ndarray | Embedding

FILTER_FIELDS = ("source", "page", "model", "chunk_index")


def validate_where(where: Where | None) -> dict[str, Any]:
    """Check a filter mapping and return it as a plain dict (empty when ``None``)."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise ConfigError(f"a filter must be a mapping, got {type(where).__name__}")
    out: dict[str, Any] = {}
    for key, value in where.items():
        if key not in FILTER_FIELDS and not (key.startswith("metadata.") and len(key) > 9):
            raise ConfigError(
                f"cannot filter on {key!r}; use one of {list(FILTER_FIELDS)} or 'metadata.<key>'"
            )
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        for v in values:
            if not isinstance(v, str | int | float | bool) or v is None:
                raise ConfigError(f"filter value for {key!r} must be a scalar, got {v!r}")
        out[key] = value if not isinstance(value, set | frozenset) else sorted(value)
    return out


def parse_where(expressions: Iterable[str]) -> dict[str, Any]:
    """Parse CLI filter expressions ``key=value`` (``key=a,b`` for one-of) into a filter mapping."""
    out: dict[str, Any] = {}
    for expr in expressions:
        key, sep, raw = expr.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"filter {expr!r} must look like key=value")
        parts = [p.strip() for p in raw.split(",")] if "," in raw else [raw.strip()]
        values: list[Any] = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
        out[key.strip()] = values if len(values) > 1 else values[0]
    return validate_where(out)


def matches(record_fields: Mapping[str, Any], where: Where | None) -> bool:
    """Evaluate a filter against a flat row (``metadata`` nested as a dict) in Python.

    Used by stores without a native filter for a key, and as the reference in tests.
    """
    for key, value in validate_where(where).items():
        if key.startswith("metadata."):
            actual = (record_fields.get("metadata") or {}).get(key[9:])
        else:
            actual = record_fields.get(key)
        allowed = value if isinstance(value, list | tuple) else [value]
        if actual not in allowed:
            return False
    return True


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    """What an adapter can hold and answer: the embedding kinds it can create collections of,
    filters, range search. One collection holds one kind (``store.kind``)."""

    kinds: frozenset[EmbeddingKind] = frozenset({"dense"})
    filters: bool = True
    range_search: bool = True


def require_kind(store: VectorStore, kind: EmbeddingKind) -> None:
    """Refuse, before any work starts, a store that cannot hold embeddings of ``kind``: an
    adapter that holds no such collections, or a collection of another kind (``store.kind``)."""
    kinds = store.capabilities.kinds
    if kind not in kinds:
        raise ConfigError(
            f"store {store.uri!r} (collection {store.collection!r}) holds "
            f"{' and '.join(sorted(kinds))} embeddings, not {kind}; choose a store that holds "
            f"{kind} embeddings or a model of a kind this store holds"
        )
    held = getattr(store, "kind", None)
    if held is not None and held != kind:
        raise ConfigError(
            f"collection {store.collection!r} at {store.uri!r} holds {held} embeddings, not "
            f"{kind}; use another collection for a {kind} model (open_store(..., kind={kind!r}))"
        )


def dipr_cut(hits: Sequence[Hit], beta: float) -> list[Hit]:
    """Keep the hits whose score is within ``beta`` of the best (Dynamic Inner Product Range)."""
    beta = check_beta(beta)
    if not hits:
        return []
    best = max(h.score for h in hits)
    return sorted((h for h in hits if within(h.score, best, beta)), key=lambda h: -h.score)


Doc = dict[str, Any]


class SideTable(Protocol):
    """A small table of JSON documents keyed by string, kept in the store beside a collection.

    The pipeline keeps its manifest here, so every process on every machine that opens the store
    sees the same state. ``put_many`` and ``delete_many`` are durable when they return (the resume
    invariant depends on it); ``get_many`` leaves missing keys out of its answer.
    """

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]: ...

    def put_many(self, docs: Mapping[str, Doc]) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> None: ...

    def scan(self) -> Iterator[tuple[str, Doc]]: ...


@runtime_checkable
class VectorStore(Protocol):
    """What the pipeline, search and server need from a store.

    ``upsert`` is idempotent on ``Record.id``. ``kind`` (every adapter has it) is the embedding
    kind the collection holds; ``search`` and ``range_search`` take a dense vector or an
    ``Embedding`` of that kind. A store may also say ``exclusive = True`` while its
    handle holds the only writer lock (embedded stores): the pipeline then knows that a store
    empty when the run began holds no older records of any source, and skips looking for them. ``search`` returns up to ``k`` hits, best first.
    ``range_search`` returns every hit within ``beta`` of the best score (DIPR), at most ``limit``.
    """

    uri: str
    collection: str
    capabilities: StoreCapabilities

    def upsert(self, records: Sequence[Record]) -> None: ...

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int: ...

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]: ...

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]: ...

    def ids(self, source: str | None = None) -> set[str]: ...

    def count(self) -> int: ...

    def flush(self) -> None: ...

    def side_table(self, name: str) -> SideTable:
        """The side table ``name`` of this collection (created on first write)."""
        ...

    def close(self) -> None: ...


__all__ = [
    "FILTER_FIELDS",
    "Doc",
    "Query",
    "SideTable",
    "StoreCapabilities",
    "VectorStore",
    "Where",
    "dipr_cut",
    "matches",
    "parse_where",
    "require_kind",
    "validate_where",
]
