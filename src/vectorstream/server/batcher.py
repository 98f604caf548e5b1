"""Cross-request micro-batching.

Concurrent requests each submit their tokenized inputs; one worker task gathers them for at most
``max_wait`` seconds (counted from the oldest waiting request) or until ``max_tokens`` tokens are
waiting, runs a single ``embed_tokenized`` call in a worker thread, and hands every request its own
rows back. Up to ``lanes`` batches run at once. With one lane, requests that arrive during inference
form the next batch and the model idles while that batch is answered and the next one gathers; with
two lanes of single-threaded inference (the service's default on CPU) one batch runs while the
other gathers, the cores never wait for the event loop, and small batches cost little more per
input than large ones (benchmarks/serve.py).

The queue is bounded in inputs. A request that would overflow it is refused at once with
:class:`QueueFullError` (the service answers 503 with ``Retry-After``) instead of waiting without
limit.

Time comes from a :class:`Clock`, so tests drive the gathering window by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ModelError, VectorstreamError

log = logging.getLogger("vectorstream.server.batcher")


class QueueFullError(VectorstreamError):
    """The batcher's queue holds too many inputs; retry later."""


class BatcherClosedError(VectorstreamError):
    """The batcher was stopped before this request ran."""


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one model call held: for metrics and tests."""

    requests: int
    inputs: int
    tokens: int
    seconds: float


@dataclass(slots=True)
class _Job:
    items: Sequence[Any]
    tokens: int
    arrived: float
    future: asyncio.Future[np.ndarray] = field(repr=False)


def _token_count(item: Any) -> int:
    # A tokenizers.Encoding: count real tokens, not padding.
    mask = getattr(item, "attention_mask", None)
    if mask is not None:
        return int(sum(mask))
    return len(item)


class MicroBatcher:
    """Gathers concurrent ``submit`` calls into batches for ``run_batch``.

    ``run_batch(items) -> ndarray`` (one row per item, order kept) runs in ``executor`` (the
    default thread pool when ``None``), in at most ``lanes`` batches at once, so it must be safe
    to call from that many threads. A batch gathered while lanes are free and nothing else waits
    is split over them, whole requests each, so no lane idles. ``run_solo``, when given, runs a
    lone request that finds the model idle and nothing else waiting (typically the same model on
    every core, for latency); no other batch starts until it is done. ``on_batch`` is called on the event loop
    after each batch.
    ``adaptive`` skips the gathering window for a lone request after a batch of one (see
    ``_wait_for_company``).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], np.ndarray],
        *,
        max_wait: float = 0.004,
        max_tokens: int = 16384,
        max_queue: int = 4096,
        clock: Clock | None = None,
        executor: Executor | None = None,
        token_count: Callable[[Any], int] = _token_count,
        on_batch: Callable[[BatchStats], None] | None = None,
        adaptive: bool = True,
        lanes: int = 1,
        run_solo: Callable[[list[Any]], np.ndarray] | None = None,
    ) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self._run_batch = run_batch
        self.max_wait = max_wait
        self.max_tokens = max_tokens
        self.max_queue = max_queue
        self._clock: Clock = clock or MonotonicClock()
        self._executor = executor
        self._token_count = token_count
        self._on_batch = on_batch
        self.adaptive = adaptive
        self.lanes = lanes
        self._run_solo = run_solo
        self._solo: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._last_batch_requests = 0
        self._pending: deque[_Job] = deque()
        self._pending_items = 0
        self._pending_tokens = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- state, for metrics -------------------------------------------------------------------
    @property
    def queued_inputs(self) -> int:
        return self._pending_items

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker task on the running loop."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._worker(), name="micro-batcher"
            )

    async def stop(self) -> None:
        """Stop the worker; requests still waiting fail with :class:`BatcherClosedError`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            # Batches already in the model finish and answer their requests.
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(BatcherClosedError("the service is shutting down"))
        self._pending_items = self._pending_tokens = 0

    # -- requests -------------------------------------------------------------------------------
    async def submit(self, items: Sequence[Any]) -> np.ndarray:
        """Embed ``items`` in whatever batch they land in; rows come back in the same order."""
        if self._closed:
            raise BatcherClosedError("the service is shutting down")
        if self._task is None:
            self.start()
        if not items:
            raise ValueError("submit() needs at least one item")
        # An oversized request is still accepted when nothing else waits, so it can always run.
        if self._pending and self._pending_items + len(items) > self.max_queue:
            raise QueueFullError(
                f"{self._pending_items} inputs are already waiting (limit {self.max_queue})"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        tokens = sum(self._token_count(i) for i in items)
        self._pending.append(_Job(items, tokens, self._clock.now(), future))
        self._pending_items += len(items)
        self._pending_tokens += tokens
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    def slices(self, items: Sequence[Any]) -> list[list[Any]]:
        """Consecutive runs of ``items`` holding at most one batch's tokens (at least one item each)."""
        out: list[list[Any]] = []
        current: list[Any] = []
        tokens = 0
        for item in items:
            n = self._token_count(item)
            if current and tokens + n > self.max_tokens:
                out.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += n
        if current:
            out.append(current)
        return out

    async def run(self, items: Sequence[Any]) -> np.ndarray:
        """Like :meth:`submit`, for jobs of any size: budget-sized slices, one per lane at a time.

        A large job (many inputs, a highlights request of many documents) thus never holds a lane
        for longer than one batch: requests that arrive meanwhile run between its slices, and no
        slice is too large for the bounded queue. With several lanes its slices keep every lane
        busy (a lone slice would otherwise run on one lane while the others idle).
        """
        pieces = self.slices(items)
        if len(pieces) == 1:
            return await self.submit(pieces[0])
        gate = asyncio.Semaphore(self.lanes)  # FIFO: slices enter in order

        async def one(piece: list[Any]) -> np.ndarray:
            async with gate:
                return await self.submit(piece)

        parts = await asyncio.gather(*(one(piece) for piece in pieces))
        return np.concatenate(parts)

    # -- the worker -----------------------------------------------------------------------------
    async def _wait_for_company(self) -> None:
        """Return when the batch is full by tokens or the oldest request has waited ``max_wait``.

        Adaptive: when the last batch held a single request there is no sign of concurrent
        traffic, so a lone request runs at once instead of paying the window as pure latency.
        Under concurrency, batches hold several requests and the window applies again.
        """
        assert self._wakeup is not None
        if self.adaptive and self._last_batch_requests <= 1 and len(self._pending) == 1:
            return
        while self._pending_tokens < self.max_tokens:
            remaining = self._pending[0].arrived + self.max_wait - self._clock.now()
            if remaining <= 0:
                return
            self._wakeup.clear()
            sleeper = asyncio.ensure_future(self._clock.sleep(remaining))
            waker = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    def _take_batch(self) -> list[_Job]:
        """Pop whole jobs, oldest first, up to the token budget (always at least one)."""
        batch = [self._pending.popleft()]
        tokens = batch[0].tokens
        while self._pending and tokens + self._pending[0].tokens <= self.max_tokens:
            job = self._pending.popleft()
            batch.append(job)
            tokens += job.tokens
        self._pending_items -= sum(len(j.items) for j in batch)
        self._pending_tokens -= tokens
        return batch

    async def _worker(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._pending or len(self._running) >= self.lanes or self._solo is not None:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_company()
            batch = [j for j in self._take_batch() if not j.future.cancelled()]
            if not batch:
                continue
            self._last_batch_requests = len(batch)
            loop = asyncio.get_running_loop()
            solo = self._run_solo
            if solo is not None and len(batch) == 1 and not self._running and not self._pending:
                # A lone request on an idle model: every core on it, nothing beside it.
                self._solo = loop.create_task(self._run(batch, solo))
                self._running.add(self._solo)
                self._solo.add_done_callback(self._lane_freed)
                continue
            for part in self._split(batch, self.lanes - len(self._running)):
                task = loop.create_task(self._run(part, self._run_batch))
                self._running.add(task)
                task.add_done_callback(self._lane_freed)

    def _split(self, batch: list[_Job], free: int) -> list[list[_Job]]:
        """``batch`` over the free lanes when nothing else waits, so no core idles; else whole."""
        if free <= 1 or len(batch) == 1 or self._pending:
            return [batch]
        parts = min(free, len(batch))
        total = sum(j.tokens for j in batch)
        out: list[list[_Job]] = [[]]
        done = 0
        for job in batch:
            # Close a part once it holds its share of the tokens (whole requests only).
            if out[-1] and len(out) < parts and done >= total * len(out) / parts:
                out.append([])
            out[-1].append(job)
            done += job.tokens
        return out

    def _lane_freed(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._solo is task:
            self._solo = None
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self, batch: list[_Job], run_batch: Callable[[list[Any]], np.ndarray]) -> None:
        """One batch through the model in a worker thread; every request gets its rows."""
        loop = asyncio.get_running_loop()
        items: list[Any] = [item for job in batch for item in job.items]
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, run_batch, items)
            if len(vectors) != len(items):
                raise RuntimeError(
                    f"the model returned {len(vectors)} rows for {len(items)} inputs"
                )
        except Exception as exc:  # every waiting request learns of the failure
            log.exception("batch of %d inputs failed", len(items))
            error = (
                exc
                if isinstance(exc, VectorstreamError)
                else ModelError(f"the model failed: {exc}")
            )
            if error is not exc:
                error.__cause__ = exc
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        offset = 0
        for job in batch:
            rows = vectors[offset : offset + len(job.items)]
            offset += len(job.items)
            if not job.future.done():
                job.future.set_result(rows)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(len(batch), len(items), sum(j.tokens for j in batch), seconds)
            )


__all__ = [
    "BatchStats",
    "BatcherClosedError",
    "Clock",
    "MicroBatcher",
    "MonotonicClock",
    "QueueFullError",
]
