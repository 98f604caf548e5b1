"""The typed messages the stages exchange; every executor carries these and nothing else.

    plan ──Task──▶ process ──ChunkBatch*, SourceWarning*, then one of
                             SourceDone | SourceUnchanged | SourceFailed──▶ embed / commit
    embed: ChunkBatch ──Encoded──▶ RecordBatch ──▶ commit
    written elsewhere (Ray workers): RecordBatch ──▶ Written ──▶ commit (counts and settles them)

All are frozen dataclasses that pickle, so they cross process (and Ray task) boundaries as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...stores._distributed import WriteReceipt
from ...types import Chunk, Record, Source
from ..manifest import ManifestEntry


@dataclass(frozen=True, slots=True)
class Task:
    """A source to parse and chunk. ``known_hash``: the manifest's content hash under the current
    settings, so the processor can tell "same bytes, new mtime" without re-embedding."""

    source: Source
    known_hash: str | None = None
    known: ManifestEntry | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """The plan's verdict for a source whose stat matches its manifest row: nothing to do."""

    uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourceStarted:
    uri: str
    worker: int


@dataclass(frozen=True, slots=True)
class ChunkBatch:
    uri: str
    chunks: tuple[Chunk, ...]
    nbytes: int


@dataclass(frozen=True, slots=True)
class SourceWarning:
    uri: str
    message: str


@dataclass(frozen=True, slots=True)
class SourceDone:
    """Every chunk of the source has been sent: ``chunks`` of them, ``nbytes`` of text."""

    uri: str
    content_hash: str
    chunks: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class SourceUnchanged:
    """Same bytes as the manifest says (only the stat changed)."""

    uri: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class SourceFailed:
    uri: str
    stage: str  # read | parse | chunk | embed | write
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class WorkerError:
    """A parsing worker could not start at all (bad configuration, missing dependency)."""

    error_type: str
    message: str


ProcessMessage = (
    SourceStarted | ChunkBatch | SourceWarning | SourceDone | SourceUnchanged | SourceFailed
)
Terminal = SourceDone | SourceUnchanged | SourceFailed


@dataclass(frozen=True, slots=True)
class Encoded:
    """Chunks tokenised for the model (``encodings`` as the embedder's tokenizer returns them)."""

    chunks: tuple[Chunk, ...]
    encodings: tuple[Any, ...]
    nbytes: int


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Embedded chunks, ready to commit. ``tokens``: real tokens the model saw."""

    records: tuple[Record, ...]
    tokens: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Written:
    """Records a worker wrote, or staged for the driver's commit (``stores._distributed``):
    one receipt per write, and the real tokens the model saw for them."""

    receipts: tuple[WriteReceipt, ...]
    tokens: int = 0
    chunks: int = 0


@dataclass(frozen=True, slots=True)
class StageTime:
    """Seconds a stage was busy on some worker: executors that run stages elsewhere add them up."""

    stage: str
    seconds: float


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    """A worker process's resident memory now: the driver adds up the latest of every process."""

    host: str
    pid: int
    stage: str
    rss_bytes: int


__all__ = [
    "ChunkBatch",
    "Encoded",
    "ProcessMessage",
    "RecordBatch",
    "Skip",
    "SourceDone",
    "SourceFailed",
    "SourceStarted",
    "SourceUnchanged",
    "SourceWarning",
    "StageTime",
    "Task",
    "Terminal",
    "WorkerError",
    "WorkerMemory",
    "Written",
]
