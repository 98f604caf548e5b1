"""Ingest jobs: uploads saved to a private temporary folder, ingested in a worker thread.

One job runs at a time (the model and the embedded store's writer lock are shared); others wait in
order. The service never ingests a path of its own disk that a client names: only bytes the client
sent, written under a folder made for the job (mode 0700) and removed when the job ends.

A job's options (its collection, and any ingest options it carries) are checked when it is
submitted, by the same code as every ingest and before anything is saved or queued: a bad one
raises ``ConfigError``, which the service answers with 400.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..types import Source

log = logging.getLogger("vectorstream.server.jobs")

IngestFn = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a client sent: its name as given (only the base name is kept) and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TextItem:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Job:
    """A job's state; mutated only by its worker thread, under the manager's lock."""

    id: str
    collection: str
    inputs: int
    state: str = "queued"  # queued | running | done | failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "ingest.job",
            "state": self.state,
            "collection": self.collection,
            "inputs": self.inputs,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": dict(self.progress),
            "errors": list(self.errors),
            "report": self.report,
            "error": self.error,
        }


_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_name(filename: str, index: int) -> str:
    """The base name of an upload, stripped of path parts and odd characters; never empty."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE.sub("_", base).strip(" .")
    return base or f"upload-{index}"


def _progress_of(event: Any) -> dict[str, Any]:
    progress = getattr(event, "progress", None)
    if progress is None:
        return {}
    names = (
        "files_seen",
        "files_done",
        "files_skipped",
        "files_failed",
        "chunks",
        "vectors",
        "tokens",
        "bytes_read",
    )
    return {n: getattr(progress, n) for n in names if hasattr(progress, n)}


class JobManager:
    """Runs ingest jobs one after another in a worker thread; keeps the last ``max_jobs``."""

    def __init__(
        self,
        *,
        store: str,
        model: Any,
        ingest_fn: IngestFn | None = None,
        max_jobs: int = 100,
        on_finished: Callable[[Job], None] | None = None,
    ) -> None:
        self._store = store
        self._model = model
        self._ingest = ingest_fn
        self._max_jobs = max_jobs
        self._on_finished = on_finished
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorstream-ingest")
        self._folders: set[Path] = set()  # upload folders of jobs not finished yet

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict()

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"queued": 0, "running": 0, "done": 0, "failed": 0}
            for job in self._jobs.values():
                out[job.state] = out.get(job.state, 0) + 1
            return out

    def check_options(self, collection: str, options: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` unless a job into ``collection`` with ``options`` can run.

        ``options`` are keyword arguments of :func:`vectorstream.ingest` (``splitter``,
        ``chunk_tokens``, ``text_field``, ...), checked by the same code as every ingest.
        """
        from ..pipeline.options import ingest_options

        fixed = {"store", "collection", "model", "on_event"} & set(options)
        if fixed:
            raise ConfigError(f"a job cannot set {sorted(fixed)}: the service fixes them")
        try:
            ingest_options(
                store=self._store,
                collection=collection,
                model=self._model if isinstance(self._model, str) else None,
                model_given=self._model is not None and not isinstance(self._model, str),
                **options,
            )
        except TypeError as exc:  # an option ingest does not have
            raise ConfigError(f"unknown ingest option: {exc}") from exc

    def submit(
        self,
        collection: str,
        *,
        uploads: Sequence[Upload] = (),
        texts: Sequence[TextItem] = (),
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check the options, save the inputs to a private folder and queue the job; return its
        state. Raises ``ConfigError`` for bad options, before anything is saved."""
        options = dict(options or {})
        self.check_options(collection, options)
        folder = Path(tempfile.mkdtemp(prefix="vectorstream-ingest-"))  # mode 0700
        try:
            sources: list[Source] = []
            used: set[str] = set()
            for i, upload in enumerate(uploads):
                name = safe_name(upload.filename, i)
                while name in used:
                    name = f"{i}-{name}"
                used.add(name)
                path = folder / name
                path.write_bytes(upload.data)
                # The source's identity is the client's file name, not the temporary path.
                sources.append(Source(uri=name, path=str(path), size=len(upload.data)))
            for j, item in enumerate(texts):
                uri = item.id or f"text:{j}"
                sources.append(
                    Source(
                        uri=uri,
                        text=item.text,
                        size=len(item.text.encode("utf-8", "surrogatepass")),
                        media_type="text/plain",
                        metadata=item.metadata,
                    )
                )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = Job(id=f"job_{uuid.uuid4().hex}", collection=collection, inputs=len(sources))
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._max_jobs:
                oldest = next(iter(self._jobs.values()))
                if oldest.state in ("queued", "running"):
                    break  # never forget a job that has not finished
                self._jobs.popitem(last=False)
            state = job.to_dict()
            self._folders.add(folder)
        self._executor.submit(self._run, job, sources, folder, options)
        return state

    def _run(
        self, job: Job, sources: list[Source], folder: Path, options: Mapping[str, Any]
    ) -> None:
        with self._lock:
            job.state = "running"
            job.started = time.time()

        def on_event(event: Any) -> None:
            progress = _progress_of(event)
            with self._lock:
                job.progress = progress

        try:
            ingest = self._ingest
            if ingest is None:
                from ..pipeline import ingest as library_ingest

                ingest = library_ingest
            report = ingest(
                sources,
                store=self._store,
                collection=job.collection,
                model=self._model,
                on_event=on_event,
                **options,
            )
            errors = [
                {
                    "source": str(getattr(e, "source", "")),
                    "stage": str(getattr(e, "stage", "")),
                    "error_type": str(getattr(e, "error_type", "")),
                    "message": str(getattr(e, "message", "")),
                }
                for e in getattr(report, "errors", ())
            ]
            summary = report.to_dict() if hasattr(report, "to_dict") else {}
            with self._lock:
                job.errors = errors
                job.report = summary
                job.progress.update(
                    files_ok=getattr(report, "files_ok", 0),
                    files_failed=getattr(report, "files_failed", 0),
                    chunks=getattr(report, "chunks", 0),
                )
            final, error = "done", None
        except Exception as exc:  # the job fails; the service goes on
            log.exception("ingest job %s failed", job.id)
            final, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            # The uploads go before the job reads as ended: a client that sees "done" or
            # "failed" never finds them on disk.
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                job.finished = time.time()
                self._folders.discard(folder)
        with self._lock:
            job.state = final
            if error is not None:
                job.error = error
            if self._on_finished is not None:
                self._on_finished(job)

    def close(self) -> None:
        """Wait for the running job; queued ones are cancelled and their uploads removed."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            folders, self._folders = list(self._folders), set()
            for job in self._jobs.values():
                if job.state == "queued":
                    job.state = "failed"
                    job.error = "the service stopped before the job ran"
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


__all__ = ["Job", "JobManager", "TextItem", "Upload", "safe_name"]
