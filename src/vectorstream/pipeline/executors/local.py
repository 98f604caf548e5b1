"""The local executor: the four stages on one machine, with processes, threads and bounded queues.

    feeder ──Task──▶ workers (processes) ──messages──▶ reader ──Encoded──▶ inference ──RecordBatch──▶ writer
    (plan)           (process: parse + chunk)          (encode)            (embed)                   (commit)

Every queue is bounded (items and bytes), so memory depends on ``buffer`` and never on the corpus.
The model runs in this process on one inference thread (ONNX Runtime releases the GIL and uses the
cores itself); tokenising the next window overlaps inference of the current one. With
``inference_cpus`` / ``io_cpus`` the inference thread and everything else run on separate cores.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import PipelineError
from ...types import Chunk, Source
from ..queues import BoundedQueue, Closed
from ..report import IngestReport, Progress, ProgressEvent, SourceFailure
from ..stages.commit import Committer
from ..stages.embed import EmbedStage
from ..stages.messages import (
    ChunkBatch,
    Encoded,
    RecordBatch,
    Skip,
    SourceDone,
    SourceFailed,
    SourceStarted,
    SourceUnchanged,
    SourceWarning,
    Task,
    WorkerError,
)
from ..stages.plan import Planner
from ..stages.process import ProcessConfig
from ._rss import TreeRss
from ._tally import Tally
from .pool import WorkerPool, pin

if TYPE_CHECKING:
    from ..engine import Pipeline

log = logging.getLogger("vectorstream.pipeline")

PLAN_BATCH = 32  # sources planned with one manifest query


def default_workers() -> int:
    """One parsing process per core beyond the one the model mostly uses, at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass
class _Counters(Tally):
    tokenize_s: float = 0.0
    embed_s: float = 0.0


def flush_now(window: int, window_size: int, model_starved: bool) -> bool:
    """Whether the reader sends its window (``window`` chunks) to be embedded after a message.

    A full window goes at once. A partial one goes as soon as the model has nothing to do: at
    the start of a run the first chunks are embedded as they arrive, instead of after the
    parsers fall silent, and a model that waits is never kept waiting for a fuller window.
    While the model is busy the window fills, so its batches stay sorted by length.
    """
    return window >= window_size or (window > 0 and model_starved)


class LocalRun:
    """One ``Pipeline.run`` on this machine: threads, queues and the stages they drive."""

    def __init__(self, pipe: Pipeline, sources: Iterable[Source], roots: Sequence[str]) -> None:
        self.pipe = pipe
        self.opts = pipe.options
        self.sources = sources
        self.roots = [os.path.abspath(r) for r in roots]
        self.counters = _Counters()
        self.lock = threading.Lock()
        self.errors: list[SourceFailure] = []
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.active: set[str] = set()  # dispatched, no terminal message yet
        self.events: queue.SimpleQueue[ProgressEvent] = queue.SimpleQueue()
        self.abort = threading.Event()
        self.fatal: BaseException | None = None
        self.feeding_done = threading.Event()
        buffer = self.opts.buffer
        window = max(8, min(self.opts.window, buffer // 4))
        self.window_size = window
        # Byte bounds: a chunk is at most a few KB of text; records carry an embedding as well.
        self.infer_q: BoundedQueue[Encoded] = BoundedQueue(
            max_items=2, max_bytes=max(1, 2 * window * 8192)
        )
        self.write_q: BoundedQueue[Any] = BoundedQueue(
            max_items=max(4, buffer // window + 2), max_bytes=max(1, buffer * 12288)
        )
        self.workers = default_workers() if self.opts.workers is None else self.opts.workers
        self.result_slots = max(4, buffer // 64)
        self.start_time = time.perf_counter()
        self.peak_rss = 0
        self.rss = TreeRss()
        self.embed = EmbedStage(pipe.embedder, late=pipe.options.chunk.late_chunking)
        self.committer: Committer | None = (
            None  # built on the writer thread (the store may be opening)
        )
        self.planner: Planner | None = None
        self.ready = threading.Event()  # manifest and committer are built
        # Tasks dispatched before the committer exists (planned without the store: see
        # Pipeline.early_planner); the writer hands them to the committer before any record.
        self.early_tasks: list[Task] = []
        self.early_planner = pipe.early_planner()
        self.model_waiting = threading.Event()  # the inference thread waits on its queue

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, source: str | None = None, message: str | None = None) -> None:
        if self.pipe.on_event is not None:
            self.events.put(ProgressEvent(kind, self._snapshot(), source, message))

    def _snapshot(self) -> Progress:
        vectors = self.committer.counters.vectors if self.committer is not None else 0
        return self.counters.progress(vectors, time.perf_counter() - self.start_time, self.peak_rss)

    def _sample_rss(self) -> None:
        rss = self.rss.sample()
        if rss is not None:
            self.peak_rss = max(self.peak_rss, rss)

    def _drain_events(self) -> None:
        if self.pipe.on_event is None:
            return
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.pipe.on_event(event)

    # ------------------------------------------------------------------ main

    def execute(self) -> IngestReport:
        embedder = self.pipe.embedder
        cfg = ProcessConfig(
            tokenizer_path=str(embedder.tokenizer_path),
            max_tokens=embedder.max_tokens,
            num_special_tokens=embedder.num_special_tokens,
            chunk_options=self.opts.chunk,
            parse_options=self.opts.parse,
            semantic_model=self.opts.semantic_model,
            parsers=self.opts.parsers,
            chunker_factory=self.opts.chunker_factory,
            images=getattr(embedder, "kind", "dense") == "image",
        )
        pool = WorkerPool(
            cfg, self.workers, self.result_slots, nice=self.opts.worker_nice, cpus=self.opts.io_cpus
        )
        threads = [
            threading.Thread(target=self._guard(self._feed, pool), name="vs-feeder", daemon=True),
            threading.Thread(target=self._guard(self._read, pool), name="vs-reader", daemon=True),
            threading.Thread(target=self._guard(self._infer), name="vs-inference", daemon=True),
            threading.Thread(target=self._guard(self._write_loop), name="vs-writer", daemon=True),
        ]
        interrupted = False
        try:
            pool.start()
            for t in threads:
                t.start()
            writer = threads[-1]
            next_progress = 0.0
            while writer.is_alive():
                writer.join(0.1)
                self._sample_rss()
                self._drain_events()
                now = time.perf_counter()
                if self.pipe.on_event is not None and now >= next_progress:
                    self.pipe.on_event(ProgressEvent("progress", self._snapshot()))
                    next_progress = now + 0.25
        except KeyboardInterrupt:
            interrupted = True
            self._stop()
        finally:
            if self.fatal is not None:
                self._stop()
            pool.shutdown(force=interrupted or self.abort.is_set())
            for t in threads:
                if t.ident is not None:  # started
                    t.join(timeout=10)
            self._sample_rss()
            self._drain_events()
        if self.fatal is not None and not interrupted:
            raise self.fatal
        if not interrupted and self.opts.prune and self.committer and self.planner:
            pruned = self.planner.prune(self.seen, self.roots)
            self.counters.files_pruned = self.committer.prune(pruned)
        report = self._report(interrupted)
        if self.pipe.on_event is not None:
            self.pipe.on_event(ProgressEvent("finished", self._snapshot()))
        return report

    def _guard(self, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(*args)
            except Closed:
                pass
            except BaseException as exc:
                log.debug("pipeline thread failed", exc_info=True)
                if self.fatal is None:
                    self.fatal = exc
                self._stop()

        return run

    def _stop(self) -> None:
        self.abort.set()
        self.ready.set()  # nobody waits for a committer that will never come
        self.infer_q.close()
        self.write_q.close()

    # ------------------------------------------------------------------ feeder: plan

    def _feed(self, pool: WorkerPool) -> None:
        pin(self.opts.io_cpus)
        try:
            planner = self.early_planner
            if planner is None:
                self.ready.wait()
                planner = self.planner
            if planner is None or self.abort.is_set():
                return
            it = iter(self.sources)
            while not self.abort.is_set():
                batch = list(itertools.islice(it, PLAN_BATCH))
                if not batch:
                    return
                fresh: list[Source] = []
                for source in batch:
                    with self.lock:
                        self.counters.files_seen += 1
                        if self.opts.prune:
                            self.seen.add(source.uri)
                        duplicate = source.uri in self.active or any(
                            s.uri == source.uri for s in fresh
                        )
                    if not duplicate:  # the same source twice in one run counts once
                        fresh.append(source)
                for decision in planner.plan(fresh):
                    if self.abort.is_set():
                        return
                    if isinstance(decision, Skip):
                        with self.lock:
                            self.counters.files_skipped += 1
                        self._emit("source_skipped", decision.uri, decision.reason)
                        continue
                    self._dispatch(decision, pool)
        finally:
            with self.lock:
                self.counters.sources_exhausted = True
            self.feeding_done.set()
            pool.close_tasks()

    def _dispatch(self, task: Task, pool: WorkerPool) -> None:
        with self.lock:
            if self.committer is None:
                self.early_tasks.append(task)
            else:
                self.committer.begin(task)
            self.active.add(task.source.uri)
        pool.submit(task, self.abort)

    # ------------------------------------------------------------------ reader: encode

    def _all_terminal(self) -> bool:
        with self.lock:
            return self.feeding_done.is_set() and not self.active

    def _read(self, pool: WorkerPool) -> None:
        pin(self.opts.io_cpus)
        window: list[Chunk] = []
        try:
            while not self.abort.is_set():
                if self._all_terminal():
                    break
                msg = pool.get(timeout=0.05)
                if msg is None:
                    for failure in pool.check_crashed():
                        window = self._handle(failure, window)
                    # Nothing arriving: do not let the model starve on a half-full window.
                    if window and len(self.infer_q) == 0:
                        self._flush_window(window)
                        window = []
                    continue
                window = self._handle(msg, window)
                if flush_now(len(window), self.window_size, self._model_starved()):
                    self._flush_window(window)
                    window = []
            if window and not self.abort.is_set():
                self._flush_window(window)
        finally:
            self.infer_q.close()

    def _handle(self, msg: Any, window: list[Chunk]) -> list[Chunk]:
        if isinstance(msg, WorkerError):
            raise PipelineError(
                f"a parsing worker could not start: {msg.error_type}: {msg.message}"
            )
        if isinstance(msg, SourceStarted):
            return window
        with self.lock:
            if msg.uri not in self.active:
                return window  # a late message of a source that already failed
        if isinstance(msg, ChunkBatch):
            window.extend(msg.chunks)
        elif isinstance(msg, SourceWarning):
            with self.lock:
                self.warnings.append(f"{msg.uri}: {msg.message}")
            self._emit("warning", msg.uri, msg.message)
        elif isinstance(msg, SourceDone):
            with self.lock:
                self.active.discard(msg.uri)
                self.counters.bytes_read += msg.nbytes
            self.write_q.put(msg, 64)
        elif isinstance(msg, SourceUnchanged):
            with self.lock:
                self.active.discard(msg.uri)
                self.counters.files_skipped += 1
            self.write_q.put(msg, 64)
            self._emit("source_skipped", msg.uri, "unchanged")
        elif isinstance(msg, SourceFailed):
            window = [c for c in window if c.source != msg.uri]
            with self.lock:
                self.active.discard(msg.uri)
                self.errors.append(SourceFailure(msg.uri, msg.stage, msg.error_type, msg.message))
                self.counters.files_failed += 1
            self._emit("source_failed", msg.uri, f"{msg.stage}: {msg.error_type}: {msg.message}")
            self.write_q.put(msg, 64)
        return window

    def _model_starved(self) -> bool:
        """The inference thread waits for input and none is queued (the first chunks of a run,
        or parsing falling behind). Never with late chunking: each window is then embedded as
        runs of whole-source text, so windows are not cut smaller than they must be."""
        if self.embed.late:
            return False  # late chunking reads a source's chunks of one window as one text
        return self.model_waiting.is_set() and len(self.infer_q) == 0

    def _flush_window(self, window: list[Chunk]) -> None:
        t0 = time.perf_counter()
        encoded = self.embed.encode(window)
        self.counters.tokenize_s += time.perf_counter() - t0
        self.infer_q.put(encoded, encoded.nbytes)

    # ------------------------------------------------------------------ inference: embed

    def _infer(self) -> None:
        pin(self.opts.inference_cpus)
        try:
            while True:
                self.model_waiting.set()
                encoded = self.infer_q.get()
                self.model_waiting.clear()
                t0 = time.perf_counter()
                batch = self.embed.embed(encoded)
                self.counters.embed_s += time.perf_counter() - t0
                with self.lock:
                    self.counters.chunks += len(batch.records)
                    self.counters.tokens += batch.tokens
                self.write_q.put(batch, batch.nbytes)
        finally:
            self.write_q.close()

    # ------------------------------------------------------------------ writer: commit

    def _write_loop(self) -> None:
        pin(self.opts.io_cpus)
        try:
            planner, committer, held = self._open_stages()
            with self.lock:  # no task slips between the early ones and the committer
                for task in self.early_tasks:
                    committer.begin(task)
                self.early_tasks.clear()
                self.planner, self.committer = planner, committer
        finally:
            self.ready.set()
        rows, seconds = self.opts.commit_rows, self.opts.commit_seconds
        closed = False
        while not closed:
            # Wake up for the commit deadline only; sources finish right after a commit or right
            # after their SourceDone arrives, so there is nothing to poll for in between.
            try:
                if held:
                    item = held.popleft()
                else:
                    item = self.write_q.get(timeout=committer.seconds_until_due(seconds))
            except TimeoutError:
                item = None
            except Closed:
                closed = True
                item = None
                if self.abort.is_set():
                    return
            if isinstance(item, RecordBatch):
                committer.add(item)
            elif isinstance(item, SourceDone):
                committer.source_done(item)
            elif isinstance(item, SourceUnchanged):
                committer.source_unchanged(item)
            elif isinstance(item, SourceFailed):
                committer.source_failed(item)
            if closed:
                finished = committer.commit() + committer.flush()
            elif committer.due(rows, seconds):
                finished = committer.commit()
            else:
                # Sources whose records were all written before their SourceDone: their stale
                # records go now, their rows with the next commit.
                committer.finalize_ready()
                finished = []
            for uri in finished:
                with self.lock:
                    self.counters.files_done += 1
                self._emit("source_done", uri)

    def _open_stages(self) -> tuple[Planner, Committer, deque[Any]]:
        """The plan and commit stages (built once the store is open), and what the writer took
        from its queue meanwhile.

        Sources planned early (``Pipeline.early_planner``) are parsed and embedded while the
        store opens; their records and messages are held here, up to ``buffer`` records, so a
        full write queue does not stall the model for the second or so the store takes.
        """
        if self.early_planner is None:  # nothing is dispatched before the stages exist
            planner, committer = self.pipe.stages()
            return planner, committer, deque()
        built: Future[tuple[Planner, Committer]] = Future()

        def build() -> None:
            pin(self.opts.io_cpus)
            try:
                built.set_result(self.pipe.stages())
            except BaseException as exc:
                built.set_exception(exc)

        threading.Thread(target=build, name="vs-open-stages", daemon=True).start()
        held: deque[Any] = deque()
        rows = 0
        while not built.done() and rows < self.opts.buffer and not self.abort.is_set():
            try:
                item = self.write_q.get(timeout=0.05)
            except TimeoutError:
                continue
            except Closed:
                break
            held.append(item)
            if isinstance(item, RecordBatch):
                rows += len(item.records)
        planner, committer = built.result()
        return planner, committer, held

    # ------------------------------------------------------------------ report

    def _report(self, interrupted: bool) -> IngestReport:
        c = self.counters
        cc = self.committer.counters if self.committer is not None else None
        stage_seconds = {"tokenize": c.tokenize_s, "embed": c.embed_s}
        if cc is not None:
            stage_seconds.update(cc.seconds)
        return c.report(
            self.pipe,
            cc,
            seconds=time.perf_counter() - self.start_time,
            peak_rss_bytes=self.peak_rss,
            interrupted=interrupted,
            errors=self.errors,
            warnings=self.warnings,
            stage_seconds=stage_seconds,
        )


__all__ = ["LocalRun", "default_workers", "flush_now"]
