"""The pipeline's stages: executor-independent units exchanging typed messages."""

from __future__ import annotations

from ._retry import call_with_retry
from .commit import Committer
from .embed import EmbedderLike, EmbedStage
from .messages import (
    ChunkBatch,
    Encoded,
    RecordBatch,
    Skip,
    SourceDone,
    SourceFailed,
    SourceStarted,
    SourceUnchanged,
    SourceWarning,
    StageTime,
    Task,
    WorkerError,
    Written,
)
from .plan import Planner
from .process import ProcessConfig, SourceProcessor

__all__ = [
    "ChunkBatch",
    "Committer",
    "EmbedStage",
    "EmbedderLike",
    "Encoded",
    "Planner",
    "ProcessConfig",
    "RecordBatch",
    "Skip",
    "SourceDone",
    "SourceFailed",
    "SourceProcessor",
    "SourceStarted",
    "SourceUnchanged",
    "SourceWarning",
    "StageTime",
    "Task",
    "WorkerError",
    "Written",
    "call_with_retry",
]
