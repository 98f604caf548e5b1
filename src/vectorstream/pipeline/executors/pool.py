"""Parsing workers for the local executor: processes (``workers >= 1``) or a thread (``0``).

Tasks and results travel through bounded queues, so a fast parser blocks instead of piling up
chunks. A worker that dies (a segfault in a native parser) is replaced, and the source it was
working on is reported as failed.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psutil

from ..stages.messages import (
    ProcessMessage,
    SourceDone,
    SourceFailed,
    SourceStarted,
    SourceUnchanged,
    Task,
    WorkerError,
)
from ..stages.process import ProcessConfig, SourceProcessor, message_of

COLLECT_AFTER_GROWTH = 2**20  # a worker that grew this much over a source collects garbage


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (SIGKILL leaves no time to clean up)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pin(cpus: tuple[int, ...] | None) -> None:
    """Pin the calling thread (and processes it starts later) to ``cpus``, when given."""
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, set(cpus))


class GarbageBound:
    """Collects reference cycles after a source over which the worker grew by ``grow_bytes``.

    Parsers leave cycles behind (python-docx's objects around lxml trees: a few hundred Python
    objects holding megabytes of C memory), and Python collects its oldest generation ever more
    rarely as the heap grows: a worker grew from 87 to 136 MiB over the ×10 sample corpus, about
    4 MiB with each DOCX file. A full collection takes milliseconds (10-20 ms in a worker here),
    so it runs only after a source that made the process grow: once the garbage is freed, the
    next sources reuse that memory and mostly do not grow it (21 collections for 400 sources).
    """

    def __init__(self, grow_bytes: int = COLLECT_AFTER_GROWTH) -> None:
        self.grow_bytes = grow_bytes
        self.collections = 0
        self._proc = psutil.Process()
        self._mark = self._rss()

    def _rss(self) -> int:
        try:
            return int(self._proc.memory_info().rss)
        except psutil.Error:
            return 0

    def source_done(self) -> bool:
        """Collect if the process grew while it processed the last source; whether it did."""
        rss = self._rss()
        grew = rss - self._mark >= self.grow_bytes
        if grew:
            gc.collect()
            self.collections += 1
            rss = self._rss()
        self._mark = rss
        return grew


def worker_main(
    config: ProcessConfig,
    tasks: Any,
    results: Any,
    index: int = 0,
    nice: int = 19,
    cpus: tuple[int, ...] | None = None,
) -> None:
    """Entry point of a worker process: take tasks until the ``None`` sentinel."""
    _die_with_parent()
    pin(cpus)
    # The model's intra-op threads run in lockstep: one of them preempted by a parser stalls the
    # whole operator. Parsing needs a small fraction of the model's CPU, so run it at the lowest
    # priority; it still fills the buffer whenever the model waits on anything. At nice 10 a
    # parser kept enough of a core to cost the 120-file job about 1.3 s of model time (of ~19 s
    # on 2 cores); at 19 that model time mostly came back and parsing kept up.
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    # Ctrl-C goes to the whole process group; the parent decides how to stop, not each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        processor = SourceProcessor(config)
    except Exception as exc:
        results.put(WorkerError(type(exc).__name__, message_of(exc)))
        return
    # What the imports and the processor made lives as long as the process: out of the
    # collector's sight, a full collection walks only what parsing left (about a third of the
    # objects, and of the collection's time).
    gc.freeze()
    garbage = GarbageBound()
    while True:
        task = tasks.get()
        if task is None:
            break
        results.put(SourceStarted(task.source.uri, index))
        for msg in processor.process(task):
            results.put(msg)
        garbage.source_done()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned workers without re-running the caller's ``__main__``.

    "spawn" normally re-imports the main script in each child, which runs a script's top-level
    code again (and fails outright when it calls ``ingest`` without an ``if __name__`` guard).
    Workers need nothing from ``__main__``, so hide its file and spec while the child starts.
    """
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        for key in saved:
            if key == "__file__":
                delattr(main, key)
            else:
                setattr(main, key, None)
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


class WorkerPool:
    def __init__(
        self,
        config: ProcessConfig,
        workers: int,
        result_slots: int,
        *,
        nice: int = 19,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.config = config
        self.n = workers
        self.nice = nice
        self.cpus = cpus
        self.ctx = mp.get_context("spawn")
        self.tasks: Any
        self.results: Any
        if workers == 0:
            self.tasks = queue.Queue(maxsize=2)
            self.results = queue.Queue(maxsize=result_slots)
        else:
            self.tasks = self.ctx.Queue(maxsize=max(2, workers * 2))
            self.results = self.ctx.Queue(maxsize=result_slots)
        self.procs: list[Any] = []
        self.current: dict[int, str] = {}
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.n == 0:
            self.thread = threading.Thread(target=self._thread_main, name="vs-parse", daemon=True)
            self.thread.start()
            return
        for i in range(self.n):
            self.procs.append(self._spawn(i))

    def _spawn(self, index: int) -> Any:
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.config, self.tasks, self.results, index, self.nice, self.cpus),
            name=f"vectorstream-worker-{index}",
            daemon=True,
        )
        with _main_module_hidden():
            proc.start()
        return proc

    def _thread_main(self) -> None:
        pin(self.cpus)
        try:
            processor = SourceProcessor(self.config)
        except Exception as exc:
            self.results.put(WorkerError(type(exc).__name__, message_of(exc)))
            return
        while True:
            task = self.tasks.get()
            if task is None:
                return
            self.results.put(SourceStarted(task.source.uri, 0))
            for msg in processor.process(task):
                self.results.put(msg)

    def submit(self, task: Task, abort: threading.Event) -> None:
        while not abort.is_set():
            try:
                self.tasks.put(task, timeout=0.2)
                return
            except queue.Full:
                continue

    def close_tasks(self) -> None:
        for _ in range(max(1, self.n)):
            with contextlib.suppress(Exception):
                self.tasks.put(None, timeout=5)

    def get(self, timeout: float) -> ProcessMessage | WorkerError | None:
        try:
            msg = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(msg, SourceStarted):
            self.current[msg.worker] = msg.uri
        elif isinstance(msg, SourceDone | SourceFailed | SourceUnchanged):
            for k, v in list(self.current.items()):
                if v == msg.uri:
                    del self.current[k]
        return msg

    def check_crashed(self) -> list[SourceFailed]:
        """Replace dead workers; return a failure for the source each was working on."""
        failures = []
        for i, proc in enumerate(self.procs):
            if proc.is_alive() or proc.exitcode == 0:
                continue
            uri = self.current.pop(i, None)
            if uri is not None:
                failures.append(
                    SourceFailed(
                        uri,
                        "parse",
                        "WorkerCrashed",
                        f"the parsing worker died (exit code {proc.exitcode}) on this file",
                    )
                )
            self.procs[i] = self._spawn(i)
        return failures

    def shutdown(self, force: bool) -> None:
        for proc in self.procs:
            if force:
                proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        if self.n > 0:
            for q in (self.tasks, self.results):
                q.cancel_join_thread()
                q.close()


__all__ = ["COLLECT_AFTER_GROWTH", "GarbageBound", "WorkerPool", "pin", "worker_main"]
