"""The streaming engine: sources → parse → chunk → embed → store, concurrently and resumably."""

from __future__ import annotations

from .api import ingest, manifest_path
from .engine import EmbedderLike, Pipeline, PipelineOptions, default_workers
from .manifest import Manifest, ManifestEntry
from .report import IngestReport, Progress, ProgressEvent, SourceFailure

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
    "manifest_path",
]
