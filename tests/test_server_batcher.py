"""The micro-batcher, deterministically: a hand-driven clock decides when the window closes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from vectorstream.errors import ModelError
from vectorstream.server.batcher import BatcherClosedError, BatchStats, MicroBatcher, QueueFullError


class ManualClock:
    """Time stands still until ``advance`` moves it; sleepers wake when their deadline passes."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.t + 1e-12 and not future.done():
                future.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]


class Recorder:
    """A model stand-in: row i of a batch is [value of item i, batch number]."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    def __call__(self, items: list[int]) -> np.ndarray:
        self.batches.append(list(items))
        if self.fail:
            raise RuntimeError("model broke")
        return np.array([[float(i), float(len(self.batches))] for i in items], dtype=np.float32)


async def settle() -> None:
    """Let every ready task run (several hops: worker, executor callback, waiters)."""
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # the executor thread finishing a batch
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def one_token(_: Any) -> int:
    return 1


def test_requests_in_the_window_share_one_batch_and_get_their_own_rows() -> None:
    async def main() -> None:
        clock, model, stats = ManualClock(), Recorder(), []
        b = MicroBatcher(
            model,
            adaptive=False,
            max_wait=0.005,
            max_tokens=100,
            clock=clock,
            token_count=one_token,
            on_batch=stats.append,
        )
        b.start()
        tasks = [asyncio.create_task(b.submit(items)) for items in ([1, 2], [3], [4, 5, 6])]
        await settle()
        assert model.batches == []  # the window is still open: nothing ran
        assert b.queued_inputs == 6 and b.queued_requests == 3
        clock.advance(0.004)
        await settle()
        assert model.batches == []
        clock.advance(0.001)
        await settle()
        assert model.batches == [[1, 2, 3, 4, 5, 6]]
        results = [await t for t in tasks]
        assert [r[:, 0].tolist() for r in results] == [[1, 2], [3], [4, 5, 6]]
        assert stats == [BatchStats(requests=3, inputs=6, tokens=6, seconds=stats[0].seconds)]
        assert b.queued_inputs == 0
        await b.stop()

    run(main())


def test_a_full_token_budget_runs_at_once_without_waiting() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder()
        b = MicroBatcher(
            model, adaptive=False, max_wait=10.0, max_tokens=4, clock=clock, token_count=one_token
        )
        first = asyncio.create_task(b.submit([1, 2]))
        second = asyncio.create_task(b.submit([3, 4]))
        third = asyncio.create_task(b.submit([5]))
        await settle()
        # The budget (4 tokens) filled with the first two requests: they ran with no clock advance.
        assert model.batches[0] == [1, 2, 3, 4]
        assert (await first)[:, 1].tolist() == [1.0, 1.0]
        assert (await second)[:, 0].tolist() == [3.0, 4.0]
        assert not third.done()  # alone, under budget: waits for its window
        clock.advance(10.0)
        await settle()
        assert model.batches == [[1, 2, 3, 4], [5]]
        assert (await third)[:, 1].tolist() == [2.0]
        await b.stop()

    run(main())


def test_a_request_over_the_budget_runs_alone() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder()
        b = MicroBatcher(
            model, adaptive=False, max_wait=1.0, max_tokens=3, clock=clock, token_count=one_token
        )
        big = asyncio.create_task(b.submit([1, 2, 3, 4, 5]))
        small = asyncio.create_task(b.submit([6]))
        await settle()
        assert model.batches[0] == [1, 2, 3, 4, 5]
        assert (await big).shape == (5, 2)
        clock.advance(1.0)
        await settle()
        assert model.batches[1] == [6]
        await small
        await b.stop()

    run(main())


def test_a_full_queue_refuses_at_once() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder()
        b = MicroBatcher(
            model,
            adaptive=False,
            max_wait=1.0,
            max_tokens=1000,
            max_queue=4,
            clock=clock,
            token_count=one_token,
        )
        waiting = asyncio.create_task(b.submit([1, 2, 3]))
        await settle()
        with pytest.raises(QueueFullError, match="3 inputs are already waiting"):
            await b.submit([4, 5])
        fits = asyncio.create_task(b.submit([4]))  # 3 + 1 = 4: still within the bound
        await settle()
        clock.advance(1.0)
        await settle()
        assert model.batches == [[1, 2, 3, 4]]
        await waiting
        await fits
        # Once drained, a request larger than the whole queue is still served (it would never fit).
        alone = asyncio.create_task(b.submit([1, 2, 3, 4, 5, 6]))
        await settle()
        clock.advance(1.0)
        await settle()
        assert (await alone).shape == (6, 2)
        await b.stop()

    run(main())


def test_a_failing_batch_fails_every_request_in_it_and_the_batcher_goes_on() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder(fail=True)
        b = MicroBatcher(
            model, adaptive=False, max_wait=0.0, max_tokens=100, clock=clock, token_count=one_token
        )
        results = await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)
        # Translated into our tree, the original kept as the cause.
        assert all(
            isinstance(r, ModelError) and isinstance(r.__cause__, RuntimeError) for r in results
        )
        model.fail = False
        assert (await b.submit([7]))[0, 0] == 7.0
        await b.stop()

    run(main())


def test_requests_arriving_during_inference_form_the_next_batch_without_waiting() -> None:
    async def main() -> None:
        clock = ManualClock()
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        batches: list[list[int]] = []

        def slow(items: list[int]) -> np.ndarray:
            batches.append(list(items))
            if len(batches) == 1:
                asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=10)
            return np.zeros((len(items), 1), np.float32)

        b = MicroBatcher(
            slow, adaptive=False, max_wait=0.5, max_tokens=100, clock=clock, token_count=one_token
        )
        first = asyncio.create_task(b.submit([1]))
        await settle()
        clock.advance(0.5)  # the first window closes; inference starts and blocks on the gate
        await settle()
        late = [asyncio.create_task(b.submit([i])) for i in (2, 3)]
        await settle()
        clock.advance(0.5)  # the late requests have now waited a full window during inference
        gate.set()
        await first
        await asyncio.gather(*late)
        assert batches == [[1], [2, 3]]
        await b.stop()

    run(main())


def test_stop_fails_waiting_requests_and_refuses_new_ones() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder()
        b = MicroBatcher(model, adaptive=False, max_wait=1.0, clock=clock, token_count=one_token)
        waiting = asyncio.create_task(b.submit([1]))
        await settle()
        await b.stop()
        with pytest.raises(BatcherClosedError):
            await waiting
        with pytest.raises(BatcherClosedError):
            await b.submit([2])
        assert model.batches == []

    run(main())


def test_the_real_clock_gathers_concurrent_requests() -> None:
    async def main() -> None:
        model = Recorder()
        b = MicroBatcher(
            model, adaptive=False, max_wait=0.05, max_tokens=1000, token_count=one_token
        )
        results = await asyncio.gather(*(b.submit([i]) for i in range(10)))
        assert [r[0, 0] for r in results] == list(range(10))
        assert len(model.batches) < 10  # gathered, not one call per request
        await b.stop()

    run(main())


def test_adaptive_mode_runs_a_lone_request_at_once_and_waits_once_traffic_is_concurrent() -> None:
    async def main() -> None:
        clock, model = ManualClock(), Recorder()
        b = MicroBatcher(model, max_wait=1.0, max_tokens=100, clock=clock, token_count=one_token)
        assert (await b.submit([1]))[0, 0] == 1.0  # no clock advance needed: nothing else waits
        assert (await b.submit([2]))[0, 0] == 2.0
        # Two requests waiting at once are concurrent traffic: they wait for the window...
        pair = [asyncio.create_task(b.submit([i])) for i in (3, 4)]
        await settle()
        assert len(model.batches) == 2
        clock.advance(1.0)
        await settle()
        assert model.batches[2] == [3, 4]
        await asyncio.gather(*pair)
        # ...and after a batch of several requests, even a lone one waits for company.
        lone = asyncio.create_task(b.submit([5]))
        await settle()
        assert len(model.batches) == 3
        late = asyncio.create_task(b.submit([6]))
        clock.advance(1.0)
        await settle()
        assert model.batches[3] == [5, 6]
        await asyncio.gather(lone, late)
        await b.stop()

    run(main())


def test_run_sends_a_large_job_in_budget_slices_and_others_run_between_them() -> None:
    async def main() -> None:
        model = Recorder()
        b = MicroBatcher(model, max_wait=0.0, max_tokens=3, token_count=one_token)
        assert b.slices([1, 2, 3, 4, 5, 6, 7]) == [[1, 2, 3], [4, 5, 6], [7]]
        big = asyncio.create_task(b.run([1, 2, 3, 4, 5, 6, 7]))
        await asyncio.sleep(0)
        other = asyncio.create_task(b.submit([99]))
        rows = await big
        await other
        assert rows[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 7]  # order kept across slices
        assert [99] in model.batches and model.batches.index([99]) < len(model.batches) - 1
        await b.stop()

    run(main())


def test_two_lanes_run_a_second_batch_while_the_first_is_in_the_model() -> None:
    async def main() -> None:
        clock = ManualClock()
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        batches: list[list[int]] = []
        inside = 0
        most_inside = 0

        def blocking(items: list[int]) -> np.ndarray:
            nonlocal inside, most_inside
            batches.append(list(items))
            inside += 1
            most_inside = max(most_inside, inside)
            try:
                asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=10)
            finally:
                inside -= 1
            return np.full((len(items), 1), float(len(batches)), np.float32)

        b = MicroBatcher(
            blocking,
            adaptive=False,
            max_wait=0.5,
            max_tokens=100,
            clock=clock,
            token_count=one_token,
            lanes=2,
        )
        first = asyncio.create_task(b.submit([1]))
        await settle()
        clock.advance(0.5)  # the first batch enters the model and blocks there
        await settle()
        second = asyncio.create_task(b.submit([2, 3]))
        await settle()
        clock.advance(0.5)  # a second lane is free: the next batch starts without waiting
        await settle()
        third = asyncio.create_task(b.submit([4]))
        await settle()
        clock.advance(0.5)  # both lanes busy: this one waits for a lane
        await settle()
        assert batches == [[1], [2, 3]] and most_inside == 2
        gate.set()
        results = await asyncio.gather(first, second, third)
        assert [r.shape[0] for r in results] == [1, 2, 1]
        assert batches == [[1], [2, 3], [4]] and most_inside == 2
        await b.stop()

    run(main())


def test_stop_lets_batches_in_the_model_answer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        entered = asyncio.Event()

        def slow(items: list[int]) -> np.ndarray:
            loop.call_soon_threadsafe(entered.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
            return np.ones((len(items), 1), np.float32)

        b = MicroBatcher(slow, max_wait=0.0, token_count=one_token, lanes=2)
        running = asyncio.create_task(b.submit([1]))
        await entered.wait()
        stopping = asyncio.create_task(b.stop())
        await settle()
        assert not stopping.done()  # waits for the batch in the model
        release.set()
        await stopping
        assert (await running).shape == (1, 1)

    run(main())


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lanes"):
        MicroBatcher(Recorder(), lanes=0)


def test_a_lone_batch_runs_solo_and_concurrent_ones_run_in_lanes() -> None:
    async def main() -> None:
        clock = ManualClock()
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        calls: list[tuple[str, list[int]]] = []

        def lane(items: list[int]) -> np.ndarray:
            calls.append(("lane", list(items)))
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=10)
            return np.zeros((len(items), 1), np.float32)

        def solo(items: list[int]) -> np.ndarray:
            calls.append(("solo", list(items)))
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=10)
            return np.ones((len(items), 1), np.float32)

        b = MicroBatcher(
            lane,
            run_solo=solo,
            adaptive=False,
            max_wait=0.5,
            max_tokens=2,
            clock=clock,
            token_count=one_token,
            lanes=2,
        )
        # Alone: the solo path, and nothing else starts while it runs.
        first = asyncio.create_task(b.submit([1]))
        await settle()
        clock.advance(0.5)
        await settle()
        waiting = asyncio.create_task(b.submit([2]))
        await settle()
        clock.advance(0.5)
        await settle()
        assert calls == [("solo", [1])]
        gate.set()
        assert (await first)[0, 0] == 1.0
        await waiting
        assert calls[1] == ("solo", [2])  # it found the model idle when its turn came
        # Three requests over a budget of two tokens: two batches, the first while more wait.
        gate.clear()
        many = [asyncio.create_task(b.submit([i])) for i in (3, 4, 5)]
        await settle()
        clock.advance(0.5)
        await settle()
        assert [c[0] for c in calls[2:]] == ["lane", "lane"]
        gate.set()
        await asyncio.gather(*many)
        await b.stop()

    run(main())


def test_a_large_job_keeps_every_lane_busy_and_its_rows_in_order() -> None:
    import threading
    import time

    async def main() -> None:
        lock = threading.Lock()
        inside = 0
        most = 0

        def model(items: list[int]) -> np.ndarray:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1
            return np.array([[float(i)] for i in items], dtype=np.float32)

        b = MicroBatcher(model, max_wait=0.0, max_tokens=3, token_count=one_token, lanes=2)
        rows = await b.run(list(range(12)))  # four slices of three
        assert rows[:, 0].tolist() == [float(i) for i in range(12)]
        assert most == 2
        await b.stop()

    run(main())
