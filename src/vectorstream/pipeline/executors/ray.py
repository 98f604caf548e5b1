"""The Ray engine: the four stages on a Ray cluster, driven by Ray Data's streaming executor.

    driver: plan ──tasks──▶ process (Ray tasks) ──▶ embed (actor pool) ──▶ write (Ray tasks)
                                                                              │ receipts
    driver: commit ◀──────────────────────────────────────────────────────────┘
            (LanceDB: append the staged fragments; every store: settle finished sources,
             then their manifest rows)

The plan and the commit run here, on the driver, with the same ``Planner`` and ``Committer`` as
the local engine; only the parsing, the model and the writes move to the cluster
(``_ray_ops``). Every planned source is marked pending in the manifest before any worker may
write for it, so a run that dies at any point leaves nothing a later run cannot find.

Ray may run any task twice (retries, restarted actors, lost nodes). Record ids are
deterministic and writes idempotent; the commit stage counts distinct ids and settling keeps one
row per id. Memory stays bounded by Ray's streaming backpressure: operators run only while their
outputs fit the object store budget, and no operator holds more than one batch.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psutil

from ...errors import ConfigError, MissingDependencyError, PipelineError
from ...stores._distributed import remote_writes
from ...types import Source
from ..report import IngestReport, Progress, ProgressEvent, SourceFailure
from ..stages._retry import call_with_retry
from ..stages.commit import Committer
from ..stages.messages import (
    Skip,
    SourceDone,
    SourceFailed,
    SourceUnchanged,
    SourceWarning,
    StageTime,
    Task,
    WorkerMemory,
    Written,
)
from ..stages.plan import Planner
from ..stages.process import ProcessConfig
from ._ray_ops import COLUMN, EmbedRows, process_rows, unpack, write_rows
from ._tally import Tally

if TYPE_CHECKING:
    from ..engine import Pipeline

log = logging.getLogger("vectorstream.pipeline.ray")

PLAN_BATCH = 256  # sources planned with one manifest query and marked pending with one write
SOURCES_PER_BLOCK = 1  # sources per parsing task
BLOCK_BYTES = 1 * 2**20


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError("ray[data]", "ray") from exc
    return ray


class RayRun:
    """One ``Pipeline.run`` on a Ray cluster."""

    def __init__(self, pipe: Pipeline, sources: Iterable[Source], roots: Sequence[str]) -> None:
        self.pipe = pipe
        self.opts = pipe.options
        self.sources = sources
        self.roots = [os.path.abspath(r) for r in roots]
        self.start_time = time.perf_counter()
        self.tally = Tally()
        self.errors: list[SourceFailure] = []
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.stage_seconds: dict[str, float] = {}
        self.memory: dict[tuple[str, int], int] = {}  # worker (host, pid) → its latest RSS
        self.peak = 0  # the largest sum seen: this process and every worker's latest RSS
        self.proc = psutil.Process()
        self.committer: Committer | None = None

    # ------------------------------------------------------------------ main

    def execute(self) -> IngestReport:
        ray = import_ray()
        store = self.pipe.store
        remote = remote_writes(store, store.uri, store.collection)  # refuses before any work
        model = self._model()
        started_here = self._connect(ray)
        interrupted = False
        try:
            planner, committer = self.pipe.stages(remote=remote)
            self.committer = committer
            tasks = self._plan(planner, committer)
            if tasks:
                self._stream(ray, tasks, model, remote.writer, committer)
            self._finish(committer.commit() + committer.flush())
            if self.opts.prune:
                self.tally.files_pruned = committer.prune(planner.prune(self.seen, self.roots))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if started_here:
                with contextlib.suppress(Exception):
                    ray.shutdown()
        report = self._report(interrupted)
        self._event("finished")
        return report

    def _model(self) -> bytes:
        """What the actors load: the recipe of a model given by spec, or the model object."""
        recipe = self.pipe.model_recipe
        try:
            return pickle.dumps(recipe if recipe is not None else self.pipe.embedder)
        except Exception as exc:
            raise ConfigError(
                "the Ray engine loads the model in its actors: pass a model spec (a folder or "
                f"name), not a loaded model that cannot be sent ({type(exc).__name__}: {exc})"
            ) from exc

    def _connect(self, ray: Any) -> bool:
        """Join the configured cluster, or start a Ray instance here; True when started here."""
        if ray.is_initialized():
            return False
        ro = self.opts.ray
        common: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        address = ro.address or os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(address=address, **common)
            else:
                # "local": a new instance for this run, never another one running on the machine
                ray.init(address="local", object_store_memory=ro.object_store_bytes, **common)
        except (ValueError, ConnectionError, RuntimeError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise ConfigError(f"cannot start or join {where}: {exc}") from exc
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return True

    # ------------------------------------------------------------------ plan

    def _plan(self, planner: Planner, committer: Committer) -> list[bytes]:
        """Decide every source; mark those to process pending before any worker sees them."""
        tasks: list[bytes] = []
        active: set[str] = set()
        it = iter(self.sources)
        while batch := list(itertools.islice(it, PLAN_BATCH)):
            fresh = []
            for source in batch:
                self.tally.files_seen += 1
                if self.opts.prune:
                    self.seen.add(source.uri)
                if source.uri not in active:  # the same source twice in one run counts once
                    active.add(source.uri)
                    fresh.append(source)
            decisions = planner.plan(fresh)
            todo = [d for d in decisions if isinstance(d, Task)]
            if todo and planner.manifest is not None:
                uris = [t.source.uri for t in todo]
                mark = functools.partial(planner.manifest.mark_pending, uris)
                call_with_retry(self.opts.retry, "mark sources pending", mark)
            for decision in decisions:
                if isinstance(decision, Skip):
                    self.tally.files_skipped += 1
                    self._event("source_skipped", decision.uri, decision.reason)
                else:
                    committer.begin(decision, marked=True)
                    # A row as every operator reads it: a pickled list of messages.
                    tasks.append(pickle.dumps([decision], protocol=pickle.HIGHEST_PROTOCOL))
        self.tally.sources_exhausted = True
        return tasks

    # ------------------------------------------------------------------ stream

    def _stream(
        self, ray: Any, tasks: list[bytes], model: bytes, writer: Any, committer: Committer
    ) -> None:
        ro, opts, embedder = self.opts.ray, self.opts, self.pipe.embedder
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        # Operators emit a block once it holds this much: small blocks keep the stream moving
        # (the driver commits as results arrive) and memory per operator small.
        ctx.target_max_block_size = BLOCK_BYTES
        config = pickle.dumps(self._process_config())
        blocks = max(1, -(-len(tasks) // SOURCES_PER_BLOCK))
        ds = ray.data.from_items([{COLUMN: t} for t in tasks], override_num_blocks=blocks)
        ds = ds.map_batches(
            process_rows,
            fn_kwargs={"config": config},
            batch_size=1,
            batch_format="numpy",
            num_cpus=ro.task_cpus,
            compute=_tasks(ray, self.opts.workers),
        )
        ds = ds.map_batches(
            EmbedRows,
            fn_constructor_kwargs={
                "model": model,
                "fingerprint": embedder.fingerprint,
                "late": opts.chunk.late_chunking,
                "cpus": ro.actor_cpus,
            },
            batch_size=max(1, opts.window // 32),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=ro.actors),
            num_cpus=ro.actor_cpus,
            num_gpus=ro.actor_gpus or None,
            max_restarts=-1,  # a lost actor is restarted and its calls retried
            max_task_retries=-1,
        )
        ds = ds.map_batches(
            write_rows,
            fn_kwargs={"writer": writer, "policy": opts.retry},
            batch_size=1,
            batch_format="numpy",
            num_cpus=0,  # I/O: never waits for a CPU the parsers and the model hold
            compute=ray.data.TaskPoolStrategy(size=max(2, ro.actors * 2)),
        )
        results = _Results(ds)
        rows, seconds = opts.commit_rows, opts.commit_seconds
        next_progress = 0.0
        try:
            while True:
                # Wake for the next results, a commit deadline or the next progress event.
                wait = committer.seconds_until_due(seconds)
                messages = results.get(min(0.25, wait) if wait is not None else 0.25)
                if messages is _END:
                    break
                for message in messages or ():
                    self._handle(message, committer)
                if committer.due(rows, seconds):
                    self._finish(committer.commit())
                elif messages:
                    committer.finalize_ready()
                now = time.perf_counter()
                if now >= next_progress:
                    self._sample_rss()
                    self._event("progress")
                    next_progress = now + 0.25
        finally:
            results.close()

    def _process_config(self) -> ProcessConfig:
        embedder = self.pipe.embedder
        return ProcessConfig(
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

    def _handle(self, msg: Any, committer: Committer) -> None:
        if isinstance(msg, Written):
            committer.add_written(msg)
            self.tally.chunks += msg.chunks
            self.tally.tokens += msg.tokens
        elif isinstance(msg, StageTime):
            self.stage_seconds[msg.stage] = self.stage_seconds.get(msg.stage, 0.0) + msg.seconds
        elif isinstance(msg, WorkerMemory):
            self.memory[(msg.host, msg.pid)] = msg.rss_bytes
            self._sample_rss()
        elif isinstance(msg, SourceDone):
            self.tally.bytes_read += msg.nbytes
            committer.source_done(msg)
        elif isinstance(msg, SourceUnchanged):
            self.tally.files_skipped += 1
            committer.source_unchanged(msg)
            self._event("source_skipped", msg.uri, "unchanged")
        elif isinstance(msg, SourceFailed):
            self.errors.append(SourceFailure(msg.uri, msg.stage, msg.error_type, msg.message))
            self.tally.files_failed += 1
            committer.source_failed(msg)
            self._event("source_failed", msg.uri, f"{msg.stage}: {msg.error_type}: {msg.message}")
        elif isinstance(msg, SourceWarning):
            self.warnings.append(f"{msg.uri}: {msg.message}")
            self._event("warning", msg.uri, msg.message)

    def _finish(self, finished: list[str]) -> None:
        for uri in finished:
            self.tally.files_done += 1
            self._event("source_done", uri)

    # ------------------------------------------------------------------ progress and report

    def _sample_rss(self) -> None:
        """The cluster's memory now, as last reported: this process plus every worker's latest
        figure (a worker that has exited keeps its last one, so this errs high)."""
        with contextlib.suppress(psutil.Error):
            now = self.proc.memory_info().rss + sum(self.memory.values())
            self.peak = max(self.peak, now)

    def _peak_rss(self) -> int:
        return self.peak

    def _snapshot(self) -> Progress:
        vectors = self.committer.counters.vectors if self.committer is not None else 0
        elapsed = time.perf_counter() - self.start_time
        return self.tally.progress(vectors, elapsed, self._peak_rss())

    def _event(self, kind: str, source: str | None = None, message: str | None = None) -> None:
        if self.pipe.on_event is not None:
            self.pipe.on_event(ProgressEvent(kind, self._snapshot(), source, message))

    def _report(self, interrupted: bool) -> IngestReport:
        self._sample_rss()
        cc = self.committer.counters if self.committer is not None else None
        seconds = dict(self.stage_seconds)
        if cc is not None:
            seconds["commit"] = cc.seconds["write"]
            seconds["finalize"] = cc.seconds["finalize"]
        return self.tally.report(
            self.pipe,
            cc,
            seconds=time.perf_counter() - self.start_time,
            peak_rss_bytes=self._peak_rss(),
            interrupted=interrupted,
            errors=self.errors,
            warnings=self.warnings,
            stage_seconds=seconds,
        )


_END: Any = object()


class _Results:
    """The dataset's output, read on a thread into a small queue, so the driver commits on time
    while Ray is still computing (reading a stream blocks until its next block is ready)."""

    def __init__(self, ds: Any) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(ds,), name="vs-ray-results")
        self._thread.daemon = True
        self._thread.start()

    def _read(self, ds: Any) -> None:
        try:
            # prefetch 0: a block is handed over as soon as it exists, not with the next one
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                self._put(unpack(batch))
                if self._stop.is_set():
                    return
            self._put(_END)
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return

    def get(self, timeout: float) -> Any:
        """The next list of messages, ``_END``, or ``None`` when nothing came in ``timeout``."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            if isinstance(item, ConfigError | PipelineError | KeyboardInterrupt):
                raise item
            raise PipelineError(f"the Ray pipeline failed: {type(item).__name__}: {item}") from item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _tasks(ray: Any, workers: int | None) -> Any:
    """Parsing tasks run as the cluster's CPUs allow, or at most ``workers`` at once."""
    return ray.data.TaskPoolStrategy(size=workers) if workers else None


__all__ = ["RayRun", "import_ray"]
