"""The streaming engine: sources → parse → chunk → embed → store, concurrently and resumably."""

from __future__ import annotations

from .api import ingest
from .engine import Pipeline
from .executors import default_workers
from .manifest import Manifest, ManifestEntry
from .options import PipelineOptions
from .report import IngestReport, Progress, ProgressEvent, SourceFailure
from .stages import EmbedderLike

__all__ = [
    "EmbedderLike",
    "IngestReport",
    "Manifest",
    "ManifestEntry",
    "Pipeline",
    "PipelineOptions",
    "Progress",
    "ProgressEvent",
    "SourceFailure",
    "default_workers",
    "ingest",
]
