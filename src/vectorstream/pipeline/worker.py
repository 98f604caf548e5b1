"""Parse-and-chunk work for one source, run in worker processes (or a thread when ``workers=0``).

A worker streams its results as messages so that a large document never travels as one object:

    ("start", uri, worker_index)                    the worker took the source
    ("unchanged", uri, content_hash)                same bytes as the manifest says: nothing to do
    ("chunks", uri, [Chunk, ...], nbytes)           at most ``MESSAGE_CHUNKS`` chunks / ``MESSAGE_BYTES``
    ("warning", uri, text)                          a non-fatal problem (replaced bytes, ...)
    ("done", uri, content_hash, n_chunks, nbytes)   every chunk of the source has been sent
    ("failed", uri, stage, error_type, message)     the source is skipped; the run goes on
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..chunking import ChunkOptions, load_tokenizer, make_chunker
from ..parsers import ParseOptions, parse
from ..sources import fingerprint
from ..types import Chunk, Source

log = logging.getLogger("vectorstream.pipeline.worker")

MESSAGE_CHUNKS = 64
MESSAGE_BYTES = 256 * 1024

Emit = Callable[[tuple[Any, ...]], None]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    tokenizer_path: str
    max_tokens: int
    num_special_tokens: int
    chunk_options: ChunkOptions
    parse_options: ParseOptions
    semantic_model: str | None = None  # model spec, loaded in the worker for the semantic splitter
    nice: int = 10  # parsing yields the cores to the model's threads (see worker_main)


@dataclass(frozen=True, slots=True)
class Task:
    source: Source
    known_hash: str | None  # the manifest's content hash under the current settings, if any


class SourceProcessor:
    """Holds the per-process tokenizer/chunker so each worker builds them once."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        tokenizer = load_tokenizer(config.tokenizer_path)
        embed = None
        if config.chunk_options.splitter == "semantic":
            from ..models import load_model

            model = load_model(config.semantic_model, threads=1)
            embed = model.embed
        self.make = lambda: make_chunker(
            config.chunk_options,
            tokenizer,
            config.max_tokens,
            num_special_tokens=config.num_special_tokens,
            embed=embed,
        )

    def process(self, task: Task, emit: Emit) -> None:
        source = task.source
        uri = source.uri
        stage = "read"
        try:
            digest = fingerprint(source)
            if task.known_hash is not None and digest == task.known_hash:
                emit(("unchanged", uri, digest))
                return
            stage = "parse"
            sections = parse(
                source,
                self.config.parse_options,
                on_warning=lambda msg: emit(("warning", uri, msg)),
            )
            chunker = self.make()
            batch: list[Chunk] = []
            batch_bytes = 0
            n_chunks = 0
            total_bytes = 0
            for chunk in chunker.chunk(_staged(sections, "parse")):
                batch.append(chunk)
                size = len(chunk.text) * 2 + 200
                batch_bytes += size
                total_bytes += len(chunk.text)
                n_chunks += 1
                if len(batch) >= MESSAGE_CHUNKS or batch_bytes >= MESSAGE_BYTES:
                    emit(("chunks", uri, batch, batch_bytes))
                    batch, batch_bytes = [], 0
            if batch:
                emit(("chunks", uri, batch, batch_bytes))
            if n_chunks == 0:
                emit(("failed", uri, "parse", "EmptyDocument", "no text found in the document"))
                return
            emit(("done", uri, digest, n_chunks, total_bytes))
        except _StageError as exc:
            cause = exc.__cause__ or exc
            emit(("failed", uri, exc.stage, type(cause).__name__, _message(cause)))
        except MemoryError as exc:
            emit(("failed", uri, stage, "MemoryError", _message(exc)))
        except Exception as exc:  # one bad source must never stop the run
            if stage == "parse":
                stage = "chunk"  # parse errors arrive wrapped by _staged; the rest is chunking
            log.debug("source %s failed at %s", uri, stage, exc_info=True)
            emit(("failed", uri, stage, type(exc).__name__, _message(exc)))


class _StageError(Exception):
    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


def _staged(sections: Any, stage: str) -> Any:
    """Re-raise errors of the section iterator as ``_StageError`` so they are blamed on parsing."""
    it = iter(sections)
    while True:
        try:
            section = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise _StageError(stage) from exc
        yield section


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (SIGKILL leaves no time to clean up)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(config: WorkerConfig, tasks: Any, results: Any, index: int = 0) -> None:
    """Entry point of a worker process: take tasks until the ``None`` sentinel."""
    _die_with_parent()
    # The model's intra-op threads run in lockstep: one of them preempted by a parser stalls the
    # whole operator. Parsing needs a small fraction of the model's CPU, so run it at a lower
    # priority; it still fills the buffer whenever the model waits on anything.
    if config.nice:
        with contextlib.suppress(OSError):
            os.nice(config.nice)
    # Ctrl-C goes to the whole process group; the parent decides how to stop, not each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        processor = SourceProcessor(config)
    except Exception as exc:
        results.put(("worker_error", type(exc).__name__, _message(exc)))
        return
    while True:
        task = tasks.get()
        if task is None:
            break
        results.put(("start", task.source.uri, index))
        processor.process(task, results.put)
