"""Commit: write records, delete each finished source's stale records, then write its manifest row.

That order is the resume invariant: a source's manifest row says "done" only after all its records
are in the store and its old records are gone, so a run killed at any moment, started again, ends
with exactly the records of an uninterrupted run. Every store call goes through the retry policy.

Records of one source may arrive in any order and interleaved with other sources; a source is
finished once its ``SourceDone`` has arrived and as many of its records have been committed.

With ``remote`` (``stores._distributed``), workers elsewhere write the records and this stage gets
their receipts (``Written``): it commits what they staged, counts distinct ids (a retried write
may report a record twice), settles finished sources (stale and duplicate rows go) and discards
what workers wrote for sources that failed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ...errors import StoreError
from ...stores._distributed import RemoteWrites, WriteReceipt
from ...stores.base import VectorStore
from ...stores.retry import RetryPolicy, write_with_retry
from ...types import Record
from ..manifest import Manifest, ManifestEntry
from ._retry import call_with_retry
from .messages import RecordBatch, SourceDone, SourceFailed, SourceUnchanged, Task, Written

log = logging.getLogger("vectorstream.pipeline.commit")


@dataclass
class _Source:
    task: Task
    expected: int | None = None  # known once SourceDone arrives
    content_hash: str | None = None
    committed: int = 0
    failed: bool = False
    marked: bool = False  # marked pending in the manifest before its first write
    new_ids: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)  # remote writes: ids counted once


@dataclass
class CommitCounters:
    vectors: int = 0  # records written
    deleted: int = 0  # stale, failed and pruned records removed
    seconds: dict[str, float] = field(default_factory=lambda: {"write": 0.0, "finalize": 0.0})
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason)


class Committer:
    """The commit stage of one run. ``begin`` may be called from any thread; the rest from one."""

    def __init__(
        self,
        store: VectorStore,
        manifest: Manifest | None,
        settings: str,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        remote: RemoteWrites | None = None,
    ) -> None:
        self.store = store
        self.remote = remote
        self.manifest = manifest
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self._staged: list[WriteReceipt] = []  # remote writes not yet committed
        self._staged_rows = 0
        self._failed: set[str] = set()  # remote: receipts of these sources are discarded
        self._first_pending = 0.0
        self.counters = CommitCounters()
        # A store this run writes alone and that started empty holds no older records: finishing
        # a source then needs no query for stale ones (an append-only sink cannot answer it
        # cheaply while writing). Sources finished once in this run are still looked up.
        # Remote writers may leave duplicates even in a fresh store: every source is settled.
        self._fresh = (
            remote is None
            and bool(getattr(store, "exclusive", False))
            and (self._retry("count the records", store.count) == 0)
        )
        self._finished: set[str] = set()
        self._rows: dict[str, ManifestEntry] = {}  # finished sources whose rows are not written
        self._rows_since: float | None = None

    # ------------------------------------------------------------------ messages in

    def begin(self, task: Task, *, marked: bool = False) -> None:
        """``marked``: the executor has already marked the source pending in the manifest."""
        with self._lock:
            self._sources[task.source.uri] = _Source(task, marked=marked)

    def add(self, batch: RecordBatch) -> None:
        if not self._pending:
            self._first_pending = time.perf_counter()
        self._pending.extend(batch.records)

    def add_written(self, msg: Written) -> None:
        """Receipts of records written elsewhere; counted when :meth:`commit` makes them visible."""
        if not self._staged:
            self._first_pending = time.perf_counter()
        self._staged.extend(msg.receipts)
        self._staged_rows += sum(len(r.ids) for r in msg.receipts)

    def source_done(self, msg: SourceDone) -> None:
        state = self._state(msg.uri)
        if state is not None:
            state.expected = msg.chunks
            state.content_hash = msg.content_hash

    def source_unchanged(self, msg: SourceUnchanged) -> None:
        """Same bytes, new stat: refresh the row so the next run skips without hashing."""
        state = self._forget(msg.uri)
        if state is None or self.manifest is None or state.task.known is None:
            return
        src, known = state.task.source, state.task.known
        entry = ManifestEntry(
            src.uri, src.size, src.mtime_ns, msg.content_hash, known.settings, known.chunks
        )
        manifest = self.manifest
        self._retry("update the manifest", lambda: manifest.put(entry))

    def source_failed(self, msg: SourceFailed) -> None:
        """A failed source contributes nothing: drop its records, written or not."""
        state = self._state(msg.uri)
        if state is None:
            return
        state.failed = True
        self._pending = [r for r in self._pending if r.source != msg.uri]
        self._forget(msg.uri)
        uri = msg.uri
        if self.remote is not None:
            self._failed.add(uri)
        if self._fresh and not state.marked and uri not in self._finished:
            return  # nothing of it was ever written, and the store held nothing before

        try:
            removed = self._retry(
                "remove a failed source's records", lambda: self.store.delete(source=uri)
            )
        except StoreError as exc:
            # Keep its manifest row: a later run still knows the source may have records.
            log.warning("could not remove records of failed source %s: %s", uri, exc)
            return
        self.counters.deleted += removed
        if self.manifest is not None:
            manifest = self.manifest
            self._retry("update the manifest", lambda: manifest.remove(uri))

    # ------------------------------------------------------------------ commits

    @property
    def pending_rows(self) -> int:
        return len(self._pending) + self._staged_rows

    def due(self, rows: int, seconds: float) -> bool:
        """Whether a commit is due: ``rows`` records pending, or records or finished sources'
        rows waiting for ``seconds``."""
        since = self._oldest()
        if since is None:
            return False
        return self.pending_rows >= rows or time.perf_counter() - since >= seconds

    def seconds_until_due(self, seconds: float) -> float | None:
        since = self._oldest()
        if since is None:
            return None
        return max(0.001, since + seconds - time.perf_counter())

    def _oldest(self) -> float | None:
        times = []
        if self._pending or self._staged:
            times.append(self._first_pending)
        if self._rows and self._rows_since is not None:
            times.append(self._rows_since)
        return min(times) if times else None

    def commit(self) -> list[str]:
        """One commit: a single manifest write (the rows of sources finished since the last
        commit, and pending marks for the sources about to get their first records), the pending
        records, then the stale-record deletes of every source now complete (their rows go out
        with the next commit, or with :meth:`flush`).

        Returns the sources whose manifest rows this call wrote. Batching the rows keeps the
        manifest to one store write per commit instead of one per source.
        """
        if self.remote is not None:
            return self._commit_remote(self.remote)
        records, self._pending = self._pending, []
        live = [r for r in records if (s := self._state(r.source)) is not None and not s.failed]
        unmarked = sorted({r.source for r in live if not self._sources[r.source].marked})
        finished = self._write_rows(unmarked)
        for uri in unmarked:
            self._sources[uri].marked = True
        if live:
            self._write(live)
        self.finalize_ready()
        return finished

    def _commit_remote(self, remote: RemoteWrites) -> list[str]:
        """Commit the staged writes of open sources, count them, and discard what was written
        for sources that failed meanwhile."""
        receipts, self._staged, self._staged_rows = self._staged, [], 0
        finished = self._write_rows([])
        live: list[WriteReceipt] = []
        dead: list[str] = []
        for receipt in receipts:
            if receipt.staged is not None:
                # One source per staged receipt; one no longer open (failed, or finished and
                # this a retried copy) is left out of the commit, so nobody ever reads it.
                if all(self._open(s) for s in receipt.sources):
                    live.append(receipt)
                continue
            dead.extend(rid for src, rid in receipt.ids if src in self._failed)
            live.append(receipt)
        t0 = time.perf_counter()
        staged = [r.staged for r in live if r.staged is not None]
        if staged:
            self._retry("commit staged writes", lambda: remote.commit(staged))
        if dead:
            self.counters.deleted += self._retry(
                "remove a failed source's records", lambda: remote.discard(dead)
            )
        self.counters.seconds["write"] += time.perf_counter() - t0
        for receipt in live:
            self._count(receipt)
        self.finalize_ready()
        return finished

    def _open(self, uri: str) -> bool:
        state = self._state(uri)
        return state is not None and not state.failed

    def _count(self, receipt: WriteReceipt) -> None:
        """A committed receipt: each distinct id counts once toward its source's chunks."""
        for source, rid in receipt.ids:
            state = self._state(source)
            if state is None or state.failed or rid in state.new_ids:
                continue  # a late copy of a finished source's record, or a duplicate
            state.new_ids.add(rid)
            state.committed += 1
            self.counters.vectors += 1
        for source, rid, why in receipt.rejected:
            state = self._state(source)
            if state is None or state.failed or rid in state.rejected:
                continue
            state.rejected.add(rid)
            state.committed += 1
            self.counters.rejected.append((rid, why))

    def flush(self) -> list[str]:
        """Finish every complete source now (the end of a run): its stale deletes and its row."""
        self.finalize_ready()
        return self._write_rows([])

    @property
    def rows_waiting(self) -> bool:
        return bool(self._rows)

    def _write_rows(self, pending: list[str]) -> list[str]:
        if self.manifest is None or (not self._rows and not pending):
            finished = list(self._rows)
            self._rows.clear()
            self._rows_since = None
            return finished
        done, manifest = list(self._rows.values()), self.manifest
        self._retry("write the manifest", lambda: manifest.record(done, pending))
        finished = list(self._rows)
        self._rows.clear()
        self._rows_since = None
        return finished

    def _write(self, live: list[Record]) -> None:
        t0 = time.perf_counter()
        result = write_with_retry(self.store, live, self.policy, sleep=self._sleep)
        self.counters.seconds["write"] += time.perf_counter() - t0
        rejected = {rid for rid, _ in result.rejected}
        self.counters.rejected.extend(result.rejected)
        for r in live:
            state = self._sources[r.source]
            state.committed += 1
            if r.id not in rejected:
                state.new_ids.add(r.id)
                self.counters.vectors += 1

    def finalize_ready(self) -> None:
        """Delete the stale records of every complete source; queue its manifest row."""
        with self._lock:
            ready = [
                (uri, s)
                for uri, s in sorted(self._sources.items())
                if not s.failed and s.expected is not None and s.committed >= s.expected
            ]
        if not ready:
            return
        t0 = time.perf_counter()
        remote = self.remote
        if remote is not None:
            # One query for all of them: every row of these sources but this run's goes.
            keep = {uri: state.new_ids for uri, state in ready}
            self.counters.deleted += self._retry(
                "settle finished sources", lambda: remote.settle(keep)
            )
        for uri, state in ready:
            if remote is None:
                self._settle(uri, state)
            self._forget(uri)
            if self._rows_since is None:
                self._rows_since = time.perf_counter()
            self._rows[uri] = ManifestEntry(
                uri,
                state.task.source.size,
                state.task.source.mtime_ns,
                state.content_hash or "",
                self.settings,
                state.expected or 0,
            )
        self.counters.seconds["finalize"] += time.perf_counter() - t0

    def _settle(self, uri: str, state: _Source) -> None:
        """Delete the records of ``uri`` this run did not write (none in a fresh store)."""
        if self._fresh and uri not in self._finished:
            self._finished.add(uri)
            return
        old = self._retry("list a source's records", partial(self.store.ids, source=uri))
        stale = sorted(old - state.new_ids)
        if stale:
            self.counters.deleted += self._retry(
                "delete stale records", partial(self.store.delete, ids=stale)
            )

    def prune(self, uris: Sequence[str]) -> int:
        """Remove every record and the manifest row of ``uris`` (sources that are gone)."""
        for uri in uris:
            self.counters.deleted += self._retry(
                "prune a removed source", partial(self.store.delete, source=uri)
            )
            if self.manifest is not None:
                self._retry("update the manifest", partial(self.manifest.remove, uri))
        return len(uris)

    # ------------------------------------------------------------------ helpers

    def _state(self, uri: str) -> _Source | None:
        with self._lock:
            return self._sources.get(uri)

    def _forget(self, uri: str) -> _Source | None:
        with self._lock:
            return self._sources.pop(uri, None)

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_with_retry(self.policy, what, fn, sleep=self._sleep)

    @property
    def open_sources(self) -> int:
        with self._lock:
            return len(self._sources)


__all__ = ["CommitCounters", "Committer"]
