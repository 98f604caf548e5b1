"""What a run counts, and the progress snapshots and the report every executor builds from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..report import IngestReport, Progress, SourceFailure
from ..stages.commit import CommitCounters

if TYPE_CHECKING:
    from ..engine import Pipeline


@dataclass
class Tally:
    files_seen: int = 0
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    files_pruned: int = 0
    chunks: int = 0
    tokens: int = 0
    bytes_read: int = 0
    sources_exhausted: bool = False

    def progress(self, vectors: int, elapsed: float, rss_bytes: int) -> Progress:
        return Progress(
            files_seen=self.files_seen,
            files_done=self.files_done,
            files_skipped=self.files_skipped,
            files_failed=self.files_failed,
            chunks=self.chunks,
            vectors=vectors,
            tokens=self.tokens,
            bytes_read=self.bytes_read,
            elapsed=elapsed,
            rss_bytes=rss_bytes,
            sources_exhausted=self.sources_exhausted,
        )

    def report(
        self,
        pipe: Pipeline,
        committed: CommitCounters | None,
        *,
        seconds: float,
        peak_rss_bytes: int,
        interrupted: bool,
        errors: Iterable[SourceFailure],
        warnings: Iterable[str],
        stage_seconds: dict[str, float],
    ) -> IngestReport:
        return IngestReport(
            files_seen=self.files_seen,
            files_ok=self.files_done,
            files_skipped=self.files_skipped,
            files_failed=self.files_failed,
            files_pruned=self.files_pruned,
            chunks=self.chunks,
            vectors=committed.vectors if committed else 0,
            tokens=self.tokens,
            records_deleted=committed.deleted if committed else 0,
            seconds=seconds,
            peak_rss_bytes=peak_rss_bytes,
            store=getattr(pipe.store, "uri", ""),
            collection=getattr(pipe.store, "collection", ""),
            model=pipe.embedder.model_id,
            interrupted=interrupted,
            errors=tuple(sorted(errors, key=lambda e: e.source)),
            warnings=tuple(warnings),
            rejected=tuple(committed.rejected) if committed else (),
            stage_seconds={k: round(v, 3) for k, v in stage_seconds.items()},
        )


__all__ = ["Tally"]
