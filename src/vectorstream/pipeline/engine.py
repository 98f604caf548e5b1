"""The streaming engine: parse and chunk in worker processes, tokenise, embed and write concurrently.

    feeder ──tasks──▶ workers (processes) ──results──▶ reader ──windows──▶ inference ──records──▶ writer
      │  manifest check                        parse + chunk        tokenise     model          upsert,
      ▼  (unchanged files skipped)                                                              stale delete,
                                                                                                manifest

Every queue is bounded (items and bytes), so memory depends on ``buffer`` and never on the corpus.
The model runs in this process on one inference thread (ONNX Runtime releases the GIL and uses the
cores itself); tokenising the next window overlaps with inference of the current one.

A source's manifest row is written only after all its records are committed and its stale records
are deleted; that single rule makes a run killed at any moment resumable with exactly the right
records.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil

from ..chunking import ChunkOptions
from ..errors import PipelineError, StoreError
from ..parsers import ParseOptions
from ..stores.base import VectorStore
from ..stores.retry import RetryPolicy, write_with_retry
from ..types import Chunk, Record, Source
from .ids import record_id, settings_key
from .manifest import Manifest, ManifestEntry
from .queues import BoundedQueue, Closed
from .report import IngestReport, Progress, ProgressEvent, SourceFailure
from .worker import SourceProcessor, Task, WorkerConfig, worker_main

log = logging.getLogger("vectorstream.pipeline")

EventCallback = Callable[[ProgressEvent], None]


class EmbedderLike(Protocol):
    """What the engine needs from a model (``vectorstream.models.Embedder`` provides it)."""

    model_id: str
    fingerprint: str
    dim: int
    max_tokens: int
    num_special_tokens: int
    tokenizer_path: Path

    def tokenize(self, texts: Sequence[str]) -> list[Any]: ...

    def embed_tokenized(self, encodings: Sequence[Any]) -> np.ndarray: ...


def default_workers() -> int:
    """One parsing process per core beyond the one the model mostly uses, at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    chunk: ChunkOptions = field(default_factory=ChunkOptions)
    parse: ParseOptions = field(default_factory=ParseOptions)
    workers: int | None = None  # None: default_workers(); 0: parse in a thread of this process
    buffer: int = 1024  # chunks in flight between the parsers and the store
    window: int = 256  # chunks tokenised and embedded together (sorted by length inside)
    commit_rows: int = 4096  # rows per store commit ...
    commit_seconds: float = 1.0  # ... or this long after the first pending row
    prune: bool = False
    semantic_model: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # bounds on retrying a failed commit
    worker_nice: int = 10  # scheduling niceness of parsing processes (0: same as the model)

    def __post_init__(self) -> None:
        if self.buffer < 16:
            raise PipelineError(f"buffer must be at least 16 chunks, got {self.buffer}")
        if self.workers is not None and self.workers < 0:
            raise PipelineError(f"workers must be >= 0, got {self.workers}")


@dataclass
class _SourceState:
    source: Source
    known: ManifestEntry | None
    content_hash: str | None = None
    expected: int | None = None  # known once the worker says "done"
    committed: int = 0
    bytes: int = 0
    failed: bool = False
    may_have_records: bool = True  # False only when the manifest proves the store has none
    marked: bool = False  # marked pending in the manifest before its first write
    new_ids: set[str] = field(default_factory=set)


@dataclass
class _Counters:
    files_seen: int = 0
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    files_pruned: int = 0
    chunks: int = 0
    vectors: int = 0
    tokens: int = 0
    bytes_read: int = 0
    deleted: int = 0
    sources_exhausted: bool = False
    # Busy seconds per stage, to tell where a slow run spends its time.
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("tokenize", "embed", "write", "finalize"), 0.0)
    )

    def add_time(self, stage: str, since: float) -> None:
        self.stage_seconds[stage] += time.perf_counter() - since


class Pipeline:
    """Ingest any iterable of ``Source``s into a store with one embedder.

    The callback ``on_event`` is always called on the thread that called :meth:`run`.
    """

    def __init__(
        self,
        embedder: EmbedderLike,
        store: VectorStore,
        options: PipelineOptions | None = None,
        *,
        manifest: Manifest | str | Path | None = None,
        on_event: EventCallback | None = None,
        write: Callable[[VectorStore, list[Record]], Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.options = options or PipelineOptions()
        if isinstance(manifest, Manifest) or manifest is None:
            self.manifest = manifest
        else:
            self.manifest = Manifest(manifest)
        self.on_event = on_event
        policy = self.options.retry
        self._write = write or (
            lambda store, records: write_with_retry(store, records, policy).rejected
        )
        self.settings = settings_key(
            embedder.fingerprint, self.options.chunk, self.options.parse, "v1"
        )

    # ------------------------------------------------------------------ public

    def run(self, sources: Iterable[Source], *, roots: Sequence[str] = ()) -> IngestReport:
        run = _Run(self, sources, roots)
        return run.execute()


class _Run:
    """The state of one ``Pipeline.run`` call: threads, queues, per-source bookkeeping."""

    def __init__(self, pipe: Pipeline, sources: Iterable[Source], roots: Sequence[str]) -> None:
        self.pipe = pipe
        self.opts = pipe.options
        self.sources = sources
        self.roots = [os.path.abspath(r) for r in roots]
        self.counters = _Counters()
        self.lock = threading.Lock()
        self.states: dict[str, _SourceState] = {}
        self.errors: list[SourceFailure] = []
        self.warnings: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.events: queue.SimpleQueue[ProgressEvent] = queue.SimpleQueue()
        self.abort = threading.Event()
        self.fatal: BaseException | None = None
        self.dispatched = 0
        self.terminal = 0
        self.feeding_done = threading.Event()
        buffer = self.opts.buffer
        window = max(8, min(self.opts.window, buffer // 4))
        self.window_size = window
        # Bytes bounds: a chunk is at most a few KB of text; records carry a vector as well.
        self.infer_q: BoundedQueue[tuple[list[Chunk], list[Any]]] = BoundedQueue(
            max_items=2, max_bytes=max(1, 2 * window * 8192)
        )
        self.write_q: BoundedQueue[Any] = BoundedQueue(
            max_items=max(4, buffer // window + 2), max_bytes=max(1, buffer * 12288)
        )
        self.workers = default_workers() if self.opts.workers is None else self.opts.workers
        self.result_slots = max(4, buffer // 64)
        self.start_time = time.perf_counter()
        self.peak_rss = 0
        self.proc = psutil.Process()

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, source: str | None = None, message: str | None = None) -> None:
        if self.pipe.on_event is not None:
            self.events.put(ProgressEvent(kind, self._snapshot(), source, message))

    def _snapshot(self) -> Progress:
        c = self.counters
        return Progress(
            files_seen=c.files_seen,
            files_done=c.files_done,
            files_skipped=c.files_skipped,
            files_failed=c.files_failed,
            chunks=c.chunks,
            vectors=c.vectors,
            tokens=c.tokens,
            bytes_read=c.bytes_read,
            elapsed=time.perf_counter() - self.start_time,
            rss_bytes=self.peak_rss,
            sources_exhausted=c.sources_exhausted,
        )

    def _sample_rss(self) -> None:
        try:
            rss = self.proc.memory_info().rss
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)

    # ------------------------------------------------------------------ main

    def execute(self) -> IngestReport:
        cfg = WorkerConfig(
            tokenizer_path=str(self.pipe.embedder.tokenizer_path),
            max_tokens=self.pipe.embedder.max_tokens,
            num_special_tokens=self.pipe.embedder.num_special_tokens,
            chunk_options=self.opts.chunk,
            parse_options=self.opts.parse,
            semantic_model=self.opts.semantic_model,
            nice=self.opts.worker_nice,
        )
        pool = _WorkerPool(cfg, self.workers, self.result_slots)
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
            self._stop_if_failed()
            pool.shutdown(force=interrupted or self.abort.is_set())
            for t in threads:
                if t.ident is not None:  # started
                    t.join(timeout=10)
            self._sample_rss()
            self._drain_events()
        if self.fatal is not None and not interrupted:
            raise self.fatal
        if not interrupted and self.opts.prune:
            self._prune()
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
        self.infer_q.close()
        self.write_q.close()

    def _stop_if_failed(self) -> None:
        if self.fatal is not None:
            self._stop()

    def _drain_events(self) -> None:
        if self.pipe.on_event is None:
            return
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.pipe.on_event(event)

    # ------------------------------------------------------------------ feeder

    def _feed(self, pool: _WorkerPool) -> None:
        manifest = self.pipe.manifest
        try:
            for source in self.sources:
                if self.abort.is_set():
                    return
                uri = source.uri
                with self.lock:
                    self.counters.files_seen += 1
                    if self.opts.prune:
                        self.seen.add(uri)
                    if uri in self.states:  # the same source twice in one run
                        continue
                known = manifest.get(uri) if manifest is not None else None
                if known is not None and known.settings != self.pipe.settings:
                    known_hash = None
                else:
                    known_hash = known.content_hash if known is not None else None
                if (
                    known_hash is not None
                    and known is not None
                    and source.path is not None
                    and source.size == known.size
                    and source.mtime_ns == known.mtime_ns
                ):
                    with self.lock:
                        self.counters.files_skipped += 1
                    self._emit("source_skipped", uri, "unchanged")
                    continue
                may_have = manifest is None or known is not None or manifest.is_pending(uri)
                with self.lock:
                    self.states[uri] = _SourceState(
                        source=source, known=known, may_have_records=may_have
                    )
                    self.dispatched += 1
                pool.submit(Task(source, known_hash), self.abort)
        finally:
            with self.lock:
                self.counters.sources_exhausted = True
            self.feeding_done.set()
            pool.close_tasks()

    # ------------------------------------------------------------------ reader + tokeniser

    def _all_terminal(self) -> bool:
        with self.lock:
            return self.feeding_done.is_set() and self.terminal >= self.dispatched

    def _read(self, pool: _WorkerPool) -> None:
        window: list[Chunk] = []
        try:
            while not self.abort.is_set():
                if self._all_terminal():
                    break
                msg = pool.get(timeout=0.05)
                if msg is None:
                    for uri, stage, etype, text in pool.check_crashed():
                        self._handle(("failed", uri, stage, etype, text), window)
                    # Nothing arriving: do not let the model starve on a half-full window.
                    if window and len(self.infer_q) == 0:
                        self._flush_window(window)
                        window = []
                    continue
                window = self._handle(msg, window)
                if len(window) >= self.window_size:
                    self._flush_window(window)
                    window = []
            if window and not self.abort.is_set():
                self._flush_window(window)
        finally:
            self.infer_q.close()

    def _handle(self, msg: tuple[Any, ...], window: list[Chunk]) -> list[Chunk]:
        kind = msg[0]
        if kind == "start":
            return window
        if kind == "worker_error":
            raise PipelineError(f"a parsing worker could not start: {msg[1]}: {msg[2]}")
        uri = msg[1]
        state = self.states.get(uri)
        if state is None:
            return window
        if kind == "chunks":
            if not state.failed:
                window.extend(msg[2])
            return window
        if kind == "warning":
            text = f"{uri}: {msg[2]}"
            with self.lock:
                self.warnings.append(text)
            self._emit("warning", uri, msg[2])
            return window
        with self.lock:
            self.terminal += 1
        if kind == "unchanged":
            # Same bytes, new mtime: remember the new stat so the next run skips without hashing.
            if self.pipe.manifest is not None and state.known is not None:
                src = state.source
                self.pipe.manifest.put(
                    ManifestEntry(
                        uri,
                        src.size,
                        src.mtime_ns,
                        msg[2],
                        state.known.settings,
                        state.known.chunks,
                    )
                )
            with self.lock:
                self.counters.files_skipped += 1
                del self.states[uri]
            self._emit("source_skipped", uri, "unchanged")
        elif kind == "done":
            state.content_hash = msg[2]
            state.bytes = msg[4]
            with self.lock:
                state.expected = msg[3]
                self.counters.bytes_read += msg[4]
            self.write_q.put(("check", uri), 64)
        elif kind == "failed":
            state.failed = True
            window = [c for c in window if c.source != uri]
            failure = SourceFailure(uri, msg[2], msg[3], msg[4])
            with self.lock:
                self.errors.append(failure)
                self.counters.files_failed += 1
            self._emit("source_failed", uri, f"{msg[2]}: {msg[3]}: {msg[4]}")
            self.write_q.put(("fail", uri), 64)
        return window

    def _flush_window(self, window: list[Chunk]) -> None:
        t0 = time.perf_counter()
        encodings = self.pipe.embedder.tokenize([c.text for c in window])
        self.counters.add_time("tokenize", t0)
        nbytes = sum(len(c.text) for c in window) * 2 + 64 * len(window)
        self.infer_q.put((window, encodings), nbytes)

    # ------------------------------------------------------------------ inference

    def _infer(self) -> None:
        embedder = self.pipe.embedder
        fp = embedder.fingerprint
        model_id = embedder.model_id
        try:
            while True:
                chunks, encodings = self.infer_q.get()
                t0 = time.perf_counter()
                vectors = embedder.embed_tokenized(encodings)
                self.counters.add_time("embed", t0)
                tokens = sum(_n_tokens(e) for e in encodings)
                records = [
                    Record(
                        id=record_id(c.source, c.chunk_index, c.text, fp),
                        vector=vectors[i],
                        text=c.text,
                        source=c.source,
                        chunk_index=c.chunk_index,
                        start=c.start,
                        end=c.end,
                        model=model_id,
                        page=c.page,
                        headings=c.headings,
                        metadata=c.metadata,
                    )
                    for i, c in enumerate(chunks)
                ]
                with self.lock:
                    self.counters.chunks += len(chunks)
                    self.counters.tokens += tokens
                nbytes = sum(len(r.text) * 2 + r.vector.nbytes + 200 for r in records)
                self.write_q.put(records, nbytes)
        finally:
            self.write_q.close()

    # ------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        pending: list[Record] = []
        first_pending = 0.0
        awaiting: set[str] = set()
        closed = False
        while not closed:
            # Wake up for the commit deadline only; sources become final right after a commit or
            # right after their "check" arrives, so there is nothing to poll for in between.
            timeout = None
            if pending:
                timeout = max(0.001, first_pending + self.opts.commit_seconds - time.perf_counter())
            try:
                item = self.write_q.get(timeout=timeout)
            except TimeoutError:
                item = None
            except Closed:
                closed = True
                item = None
                if self.abort.is_set():
                    return
            if isinstance(item, list):
                if not pending:
                    first_pending = time.perf_counter()
                pending.extend(item)
            elif isinstance(item, tuple) and item[0] == "check":
                awaiting.add(item[1])
            elif isinstance(item, tuple) and item[0] == "fail":
                self._fail_source(item[1], pending)
                pending = [r for r in pending if r.source != item[1]]
                awaiting.discard(item[1])
            due = pending and (
                closed
                or len(pending) >= self.opts.commit_rows
                or time.perf_counter() - first_pending >= self.opts.commit_seconds
            )
            if due:
                self._commit(pending)
                pending = []
            if awaiting:
                self._finalize_ready(awaiting)
        if awaiting:
            self._finalize_ready(awaiting)

    def _commit(self, records: list[Record]) -> None:
        live = [r for r in records if not self.states[r.source].failed] if records else []
        if not live:
            return
        t0 = time.perf_counter()
        manifest = self.pipe.manifest
        if manifest is not None:
            unmarked = {r.source for r in live if not self.states[r.source].marked}
            manifest.mark_pending(sorted(unmarked))
            for uri in unmarked:
                self.states[uri].marked = True
        rejected = self.pipe._write(self.pipe.store, live)
        self.counters.add_time("write", t0)
        rejected_ids = {rid for rid, _ in rejected}
        if rejected:
            with self.lock:
                self.rejected.extend(rejected)
        written = 0
        for r in live:
            state = self.states[r.source]
            state.committed += 1
            if r.id not in rejected_ids:
                state.new_ids.add(r.id)
                written += 1
        with self.lock:
            self.counters.vectors += written

    def _finalize_ready(self, awaiting: set[str]) -> None:
        for uri in sorted(awaiting):
            state = self.states.get(uri)
            if state is None or state.failed:
                awaiting.discard(uri)
                continue
            with self.lock:
                ready = state.expected is not None and state.committed >= state.expected
            if not ready:
                continue
            awaiting.discard(uri)
            t0 = time.perf_counter()
            stale = (
                self.pipe.store.ids(source=uri) - state.new_ids if state.may_have_records else set()
            )
            if stale:
                removed = self.pipe.store.delete(ids=sorted(stale))
                with self.lock:
                    self.counters.deleted += removed
            if self.pipe.manifest is not None and state.content_hash is not None:
                src = state.source
                self.pipe.manifest.put(
                    ManifestEntry(
                        uri,
                        src.size,
                        src.mtime_ns,
                        state.content_hash,
                        self.pipe.settings,
                        state.expected or 0,
                    )
                )
            self.counters.add_time("finalize", t0)
            with self.lock:
                self.counters.files_done += 1
                del self.states[uri]
            self._emit("source_done", uri)

    def _fail_source(self, uri: str, pending: list[Record]) -> None:
        """A failed source contributes nothing: drop its records, written or not."""
        state = self.states.get(uri)
        if state is not None and not state.marked and not state.may_have_records:
            return  # nothing of it was ever written
        try:
            removed = self.pipe.store.delete(source=uri)
        except StoreError as exc:
            # Keep its manifest marks, so a later run still knows it may have records.
            log.warning("could not remove records of failed source %s: %s", uri, exc)
            return
        with self.lock:
            self.counters.deleted += removed
        if self.pipe.manifest is not None:
            self.pipe.manifest.remove(uri)

    # ------------------------------------------------------------------ prune + report

    def _prune(self) -> None:
        manifest = self.pipe.manifest
        if manifest is None:
            return
        for uri in list(manifest.uris()):
            if uri in self.seen or not os.path.isabs(uri):
                continue
            under_root = any(
                uri == r or uri.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots
            )
            if os.path.exists(uri) and not under_root:
                continue
            self.counters.deleted += self.pipe.store.delete(source=uri)
            manifest.remove(uri)
            self.counters.files_pruned += 1

    def _report(self, interrupted: bool) -> IngestReport:
        c = self.counters
        return IngestReport(
            files_seen=c.files_seen,
            files_ok=c.files_done,
            files_skipped=c.files_skipped,
            files_failed=c.files_failed,
            files_pruned=c.files_pruned,
            chunks=c.chunks,
            vectors=c.vectors,
            tokens=c.tokens,
            records_deleted=c.deleted,
            seconds=time.perf_counter() - self.start_time,
            peak_rss_bytes=self.peak_rss,
            store=getattr(self.pipe.store, "uri", ""),
            collection=getattr(self.pipe.store, "collection", ""),
            model=self.pipe.embedder.model_id,
            interrupted=interrupted,
            errors=tuple(sorted(self.errors, key=lambda e: e.source)),
            warnings=tuple(self.warnings),
            rejected=tuple(self.rejected),
            stage_seconds={k: round(v, 3) for k, v in c.stage_seconds.items()},
        )


def _n_tokens(encoding: Any) -> int:
    mask = getattr(encoding, "attention_mask", None)
    if mask is not None:
        return int(sum(mask))
    return len(encoding)


@contextlib.contextmanager
def _main_module_hidden() -> Any:
    """Start spawned workers without re-running the caller's ``__main__``.

    "spawn" normally re-imports the main script in each child, which runs a script's top-level
    code again (and fails outright when it calls ``ingest`` without an ``if __name__`` guard).
    Workers need nothing from ``__main__``, so hide its file and spec while the child starts.
    """
    import sys

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


class _WorkerPool:
    """Parsing workers: processes (``workers >= 1``) or one thread of this process (``0``).

    Tasks and results travel through bounded queues, so a fast parser blocks instead of piling up
    chunks. A worker that dies (a segfault in a native parser) is replaced, and the source it was
    working on is reported as failed.
    """

    def __init__(self, config: WorkerConfig, workers: int, result_slots: int) -> None:
        self.config = config
        self.n = workers
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
        self.thread_error: BaseException | None = None

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
            args=(self.config, self.tasks, self.results, index),
            name=f"vectorstream-worker-{index}",
            daemon=True,
        )
        with _main_module_hidden():
            proc.start()
        return proc

    def _thread_main(self) -> None:
        try:
            processor = SourceProcessor(self.config)
        except Exception as exc:
            self.results.put(("worker_error", type(exc).__name__, str(exc)))
            return
        while True:
            task = self.tasks.get()
            if task is None:
                return
            self.results.put(("start", task.source.uri, 0))
            processor.process(task, self.results.put)

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

    def get(self, timeout: float) -> tuple[Any, ...] | None:
        try:
            msg = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg[0] == "start":
            self.current[msg[2]] = msg[1]
        elif msg[0] in ("done", "failed", "unchanged"):
            for k, v in list(self.current.items()):
                if v == msg[1]:
                    del self.current[k]
        return tuple(msg)

    def check_crashed(self) -> list[tuple[str, str, str, str]]:
        """Replace dead workers; return a failure for the source each was working on."""
        failures = []
        for i, proc in enumerate(self.procs):
            if proc.is_alive() or proc.exitcode == 0:
                continue
            uri = self.current.pop(i, None)
            if uri is not None:
                failures.append(
                    (
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
