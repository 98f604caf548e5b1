"""The retrying writer: every batch the pipeline produces goes to a store through here.

Transient failures (the store is down, a connection dropped, a timeout) are retried with
exponential backoff and *full* jitter — a delay drawn uniformly from ``[0, min(max_delay,
base_delay * 2**attempt)]`` — so writers that failed together do not retry together. Retries stop
at ``max_attempts`` consecutive failures or at ``deadline`` seconds, whichever comes first, and
then ``StoreUnavailableError`` says what happened. Upserts are idempotent, so re-sending a batch
that was half applied before a connection dropped is safe.

Records are checked before they are sent (the embedding by the one vector rule of its kind, the
store's kinds, the payload size); when the store itself rejects a batch, the batch is bisected so
the good records are still written and each bad record is reported with its reason.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._vectors import embedding_problem, embedding_problems, embedding_width
from ..errors import ConfigError, RecordRejectedError, StoreUnavailableError
from ..types import EmbeddingKind, Record
from .base import VectorStore

log = logging.getLogger("vectorstream.stores.retry")

# Errors that mean "try again later" rather than "this will never work". Adapters translate
# vendor errors into StoreUnavailableError; the builtins cover a store that leaks a socket error.
TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailableError, ConnectionError, TimeoutError)

OnRejected = Callable[[Record, str], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds on retrying one ``write_with_retry`` call.

    ``max_attempts`` counts tries of one request (1 = no retry); ``deadline`` bounds the whole call
    in seconds, sleeping included. ``max_record_bytes`` bounds one record's text and metadata.
    """

    max_attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 10.0
    deadline: float = 120.0
    max_record_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.deadline <= 0:
            raise ConfigError("base_delay and max_delay must be >= 0 and deadline > 0")
        if self.max_record_bytes < 1:
            raise ConfigError(f"max_record_bytes must be >= 1, got {self.max_record_bytes}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``attempt`` (0 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * (2.0**attempt))
        return rng.uniform(0.0, cap)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``write_with_retry`` call did."""

    written: int
    rejected: tuple[tuple[str, str], ...] = ()  # (record id, reason)
    attempts: int = 1  # requests sent, retries and bisection included
    retries: int = 0


@dataclass(slots=True)
class _Run:
    store: VectorStore
    policy: RetryPolicy
    on_rejected: OnRejected | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    rng: random.Random
    started: float
    written: int = 0
    attempts: int = 0
    retries: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def reject(self, record: Record, reason: str) -> None:
        log.warning("record %s rejected: %s", record.id, reason)
        self.rejected.append((record.id, reason))
        if self.on_rejected is not None:
            self.on_rejected(record, reason)

    def send(self, batch: list[Record]) -> None:
        """Upsert one batch, retrying transient failures; bisect on rejection."""
        failures = 0
        while True:
            self.attempts += 1
            try:
                self.store.upsert(batch)
            except RecordRejectedError as exc:
                self._split(batch, exc)
                return
            except TRANSIENT as exc:
                failures += 1
                self._wait_or_give_up(failures, exc)
                continue
            self.written += len(batch)
            return

    def _wait_or_give_up(self, failures: int, exc: BaseException) -> None:
        elapsed = self.clock() - self.started
        if failures >= self.policy.max_attempts:
            raise StoreUnavailableError(
                f"{_where(self.store)} still failing after {failures} attempts in "
                f"{elapsed:.1f} s ({exc}); {self.written} records were written. Upserts are "
                f"idempotent: check the store and run again to finish the job"
            ) from exc
        delay = self.policy.backoff(failures - 1, self.rng)
        remaining = self.policy.deadline - elapsed
        if remaining <= 0 or delay > remaining:
            raise StoreUnavailableError(
                f"{_where(self.store)} still failing after {failures} attempts, retry deadline "
                f"of {self.policy.deadline:g} s reached ({exc}); {self.written} records were "
                f"written. Upserts are idempotent: check the store and run again to finish the job"
            ) from exc
        self.retries += 1
        log.info("store write failed (%s); retry %d in %.2f s", exc, failures, delay)
        self.sleep(delay)

    def _split(self, batch: list[Record], exc: RecordRejectedError) -> None:
        named = {rid: why for rid, why in exc.rejected.items() if any(r.id == rid for r in batch)}
        if named:
            # The store told us which records it refused: set them aside, send the rest.
            rest = [r for r in batch if r.id not in named]
            for r in batch:
                if r.id in named:
                    self.reject(r, named[r.id])
            if rest:
                self.send(rest)
            return
        if len(batch) == 1:
            self.reject(batch[0], str(exc) or type(exc).__name__)
            return
        mid = len(batch) // 2
        self.send(batch[:mid])
        self.send(batch[mid:])


def _where(store: VectorStore) -> str:
    uri = getattr(store, "uri", "?")
    collection = getattr(store, "collection", "?")
    return f"store {uri!r} (collection {collection!r})"


def _payload_size(record: Record) -> int:
    """Bytes of text, headings and metadata, as the store will roughly receive them."""
    size = len(record.text.encode("utf-8")) + sum(len(h.encode("utf-8")) for h in record.headings)
    meta = record.metadata
    if all(isinstance(v, str | int | float | bool | None) for v in meta.values()):
        # Flat metadata (the common case): no need to serialise it to know its size.
        return size + sum(len(str(k)) + len(str(v).encode("utf-8")) + 6 for k, v in meta.items())
    return size + len(json.dumps(dict(meta), ensure_ascii=False).encode("utf-8"))


def record_problem(
    record: Record, dim: int | None, max_bytes: int, *, vector_checked: bool = False
) -> str | None:
    """Why a record cannot be stored, or ``None`` when it looks fine.

    The embedding is held to the one vector rule (``vectorstream._vectors``) for its kind;
    ``vector_checked`` skips that when the caller has checked a whole batch at once.
    """
    if not record.id:
        return "record id is empty"
    if not vector_checked:
        problem = embedding_problem(record.embedding, dim)
        if problem is not None:
            return problem
    try:
        size = _payload_size(record)
    except (TypeError, ValueError) as exc:
        return f"metadata is not JSON-serialisable: {exc}"
    if size > max_bytes:
        return f"payload of {size} bytes exceeds the limit of {max_bytes} bytes"
    return None


def _valid_dim(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _expected_dim(store: VectorStore, kind: EmbeddingKind, records: Sequence[Record]) -> int | None:
    """The dimension the store holds embeddings of ``kind`` in.

    ``<kind>_dim`` where the store names one per kind, its ``dim`` when it holds this kind only
    (its collection is of this kind, or its adapter holds no other); a store that does not know
    yet takes the batch's most common width.
    """
    named: Any = getattr(store, f"{kind}_dim", None)
    if _valid_dim(named):
        return int(named)
    capabilities = getattr(store, "capabilities", None)
    kinds = getattr(capabilities, "kinds", frozenset({"dense"}))
    dim: Any = getattr(store, "dim", None)
    if (set(kinds) == {kind} or getattr(store, "kind", None) == kind) and _valid_dim(dim):
        return int(dim)
    sizes = [embedding_width(r.embedding) for r in records]
    return max(set(sizes), key=sizes.count) if sizes else None


def _problems(store: VectorStore, records: Sequence[Record]) -> list[str | None]:
    """The vector problem of each record (``None`` when fine), kind by kind, a batch at a time."""
    kinds = getattr(getattr(store, "capabilities", None), "kinds", None)
    held = getattr(store, "kind", None)  # the one kind the collection holds, where it says
    out: list[str | None] = [None] * len(records)
    groups: dict[EmbeddingKind, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.embedding.kind, []).append(i)
    for kind, idx in groups.items():
        if kinds is not None and kind not in kinds:
            names = " and ".join(sorted(kinds))
            for i in idx:
                out[i] = f"{_where(store)} holds {names} embeddings, not {kind}"
            continue
        if isinstance(held, str) and held != kind:
            for i in idx:
                out[i] = f"{_where(store)} holds {held} embeddings, not {kind}"
            continue
        group = [records[i] for i in idx]
        dim = _expected_dim(store, kind, group)
        for i, problem in zip(
            idx, embedding_problems([r.embedding for r in group], dim), strict=True
        ):
            out[i] = problem
    return out


def write_with_retry(
    store: VectorStore,
    records: Sequence[Record],
    policy: RetryPolicy | None = None,
    *,
    on_rejected: OnRejected | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> WriteResult:
    """Upsert ``records`` into ``store``, retrying transient failures within ``policy``'s bounds.

    Invalid records are not sent: each is passed to ``on_rejected(record, reason)`` and listed in
    the result; the others are written. Raises ``StoreUnavailableError`` when the store stays
    unreachable past ``policy.max_attempts`` or ``policy.deadline``, and ``StoreError`` for a
    failure that retrying cannot fix. ``sleep``, ``clock`` and ``rng`` are seams for tests.
    """
    policy = policy or RetryPolicy()
    max_bytes = min(policy.max_record_bytes, int(getattr(store, "max_record_bytes", 1 << 62)))
    run = _Run(
        store=store,
        policy=policy,
        on_rejected=on_rejected,
        sleep=sleep,
        clock=clock,
        rng=rng or random.Random(),
        started=clock(),
    )
    records = list(records)
    good: list[Record] = []
    for record, problem in zip(records, _problems(store, records), strict=True):
        if problem is None:
            problem = record_problem(record, None, max_bytes, vector_checked=True)
        if problem is None:
            good.append(record)
        else:
            run.reject(record, problem)
    if good:
        run.send(good)
    return WriteResult(
        written=run.written,
        rejected=tuple(run.rejected),
        attempts=run.attempts,
        retries=run.retries,
    )


__all__ = ["TRANSIENT", "RetryPolicy", "WriteResult", "record_problem", "write_with_retry"]
