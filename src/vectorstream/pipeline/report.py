"""What a run reports: progress events while it runs, an ``IngestReport`` at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """A source that could not be ingested; the run went on without it."""

    source: str
    stage: str  # "read" | "parse" | "chunk" | "embed" | "write"
    error_type: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "stage": self.stage,
            "error_type": self.error_type,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a running ingest."""

    files_seen: int = 0
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    chunks: int = 0
    vectors: int = 0
    tokens: int = 0
    bytes_read: int = 0
    elapsed: float = 0.0
    rss_bytes: int = 0
    sources_exhausted: bool = False

    @property
    def vectors_per_second(self) -> float:
        return self.vectors / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``kind`` is "progress", "source_done", "source_skipped", "source_failed", "warning" or "finished"."""

    kind: str
    progress: Progress
    source: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class IngestReport:
    files_seen: int
    files_ok: int
    files_skipped: int
    files_failed: int
    files_pruned: int
    chunks: int
    vectors: int
    tokens: int
    records_deleted: int
    seconds: float
    peak_rss_bytes: int
    store: str
    collection: str
    model: str
    interrupted: bool = False
    errors: tuple[SourceFailure, ...] = ()
    warnings: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = field(default=())
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy time per stage

    @property
    def ok(self) -> bool:
        return not self.errors and not self.interrupted and not self.rejected

    @property
    def exit_code(self) -> int:
        """0: everything ingested; 1: some sources failed or records were rejected; 130: interrupted."""
        if self.interrupted:
            return 130
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "files_seen": self.files_seen,
            "files_ok": self.files_ok,
            "files_skipped": self.files_skipped,
            "files_failed": self.files_failed,
            "files_pruned": self.files_pruned,
            "chunks": self.chunks,
            "vectors": self.vectors,
            "tokens": self.tokens,
            "records_deleted": self.records_deleted,
            "seconds": round(self.seconds, 3),
            "chunks_per_second": round(self.chunks / self.seconds, 2) if self.seconds else 0.0,
            "peak_rss_bytes": self.peak_rss_bytes,
            "store": self.store,
            "collection": self.collection,
            "model": self.model,
            "interrupted": self.interrupted,
            "errors": [e.to_dict() for e in self.errors],
            "warnings": list(self.warnings),
            "rejected": [{"id": i, "reason": r} for i, r in self.rejected],
            "stage_seconds": dict(self.stage_seconds),
        }
