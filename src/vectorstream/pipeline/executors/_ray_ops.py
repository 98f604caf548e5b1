"""The stages as Ray Data operators.

    tasks ──▶ process_rows (tasks: parse + chunk) ──▶ EmbedRows (actor pool: the model, loaded
    once per actor) ──▶ write_rows (tasks: write through the store's ``BlockWriter``) ──▶ driver

Every row carries a pickled list of stage messages (column ``msg``): a part of one source (at
most one ``ChunkBatch``, so rows count chunk batches and an operator's ``batch_size`` bounds its
chunks), or what one operator call made. The typed messages of ``stages.messages`` cross Ray's
object store as they are; terminal messages (``SourceDone``…) travel with the chunks, and each
operator passes on what it does not handle. Each
operator adds ``StageTime`` messages for the seconds it was busy, and ``WorkerMemory`` with its
process's resident memory, which the driver adds up over the cluster.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from ...errors import ConfigError
from ...stores.retry import RetryPolicy
from ...types import Chunk, Record
from ..stages.embed import EmbedStage
from ..stages.messages import ChunkBatch, RecordBatch, StageTime, WorkerMemory, Written
from ..stages.process import SourceProcessor

COLUMN = "msg"


def pack(*parts: Sequence[Any]) -> dict[str, np.ndarray]:
    """Rows of ``parts`` (each a list of messages)."""
    rows = np.empty(len(parts), dtype=object)
    rows[:] = [pickle.dumps(list(p), protocol=pickle.HIGHEST_PROTOCOL) for p in parts]
    return {COLUMN: rows}


def unpack(batch: dict[str, Any]) -> list[Any]:
    """The messages of every row of ``batch``, in order."""
    return [m for row in batch[COLUMN] for m in pickle.loads(row)]


def _memory(stage: str) -> WorkerMemory:
    return WorkerMemory(socket.gethostname(), os.getpid(), stage, _PROCESS.memory_info().rss)


_PROCESS = psutil.Process()


@dataclass(frozen=True, slots=True)
class ModelRecipe:
    """How an actor loads the model the driver loaded: by spec, on the actor's own node."""

    spec: str
    backend: str | None = None
    quantized: bool = False
    kind: str | None = None

    def load(self, threads: int) -> Any:
        from ...models import load_model

        return load_model(
            self.spec,
            backend=self.backend,
            quantized=self.quantized,
            kind=self.kind,
            threads=threads,
        )


# -- parse + chunk ---------------------------------------------------------------------------

_PROCESSORS: dict[bytes, SourceProcessor] = {}
_PROCESSORS_LOCK = threading.Lock()


def _processor(config: bytes) -> SourceProcessor:
    """One processor per worker process and configuration (its tokenizer loads once)."""
    with _PROCESSORS_LOCK:
        processor = _PROCESSORS.get(config)
        if processor is None:
            processor = SourceProcessor(pickle.loads(config))
            _PROCESSORS[config] = processor
        return processor


def process_rows(batch: dict[str, Any], *, config: bytes) -> Iterator[dict[str, np.ndarray]]:
    """Parse and chunk each task of ``batch``; stream its messages out a chunk batch at a time."""
    processor = _processor(config)
    for task in unpack(batch):
        busy = 0.0
        part: list[Any] = []
        t0 = time.perf_counter()
        for message in processor.process(task):
            if isinstance(message, ChunkBatch) and any(isinstance(m, ChunkBatch) for m in part):
                busy += time.perf_counter() - t0
                yield pack(part)
                part = []
                t0 = time.perf_counter()
            part.append(message)
        busy += time.perf_counter() - t0
        part.extend((StageTime("parse", busy), _memory("parse")))
        yield pack(part)


# -- embed -------------------------------------------------------------------------------------


class EmbedRows:
    """The embedding actor: loads the model once, embeds the chunks of each batch of rows."""

    def __init__(self, model: bytes, fingerprint: str, late: bool, cpus: float) -> None:
        loaded = pickle.loads(model)
        threads = max(1, math.ceil(cpus))
        embedder = loaded.load(threads) if isinstance(loaded, ModelRecipe) else loaded
        if embedder.fingerprint != fingerprint:
            raise ConfigError(
                f"the model loaded on {socket.gethostname()} is not the driver's "
                f"({embedder.fingerprint} != {fingerprint}): every node must see the same files"
            )
        self.stage = EmbedStage(embedder, late=late)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        out: list[Any] = []
        chunks: list[Chunk] = []
        for message in unpack(batch):
            if isinstance(message, ChunkBatch):
                chunks.extend(message.chunks)
            else:
                out.append(message)
        if chunks:
            t0 = time.perf_counter()
            encoded = self.stage.encode(chunks)
            t1 = time.perf_counter()
            out.append(self.stage.embed(encoded))
            t2 = time.perf_counter()
            out.extend((StageTime("tokenize", t1 - t0), StageTime("embed", t2 - t1)))
        out.append(_memory("embed"))
        return pack(out)


# -- write -------------------------------------------------------------------------------------


def write_rows(batch: dict[str, Any], *, writer: Any, policy: RetryPolicy) -> dict[str, np.ndarray]:
    """Write the records of ``batch`` through ``writer``; pass the other messages on."""
    out: list[Any] = []
    records: list[Record] = []
    tokens = 0
    for message in unpack(batch):
        if isinstance(message, RecordBatch):
            records.extend(message.records)
            tokens += message.tokens
        else:
            out.append(message)
    if records:
        t0 = time.perf_counter()
        receipts = writer.write(records, policy)
        out.append(Written(tuple(receipts), tokens, len(records)))
        out.append(StageTime("write", time.perf_counter() - t0))
    out.append(_memory("write"))
    return pack(out)


__all__ = ["COLUMN", "EmbedRows", "ModelRecipe", "pack", "process_rows", "unpack", "write_rows"]
