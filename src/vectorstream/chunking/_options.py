"""Chunking settings, validated once when they are made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ChunkingError

SPLITTERS: tuple[str, ...] = ("tokens", "sentences", "markdown", "semantic")

# The semantic splitter's rule when no threshold is given: split where the similarity of two
# adjacent sentences falls below this percentile of all adjacent similarities in the section.
SEMANTIC_PERCENTILE = 10.0


@dataclass(frozen=True, slots=True)
class ChunkOptions:
    """How a source's sections are cut into chunks.

    ``chunk_tokens`` is an upper bound; :func:`~vectorstream.chunking.make_chunker` lowers it to
    what the model accepts (its ``max_tokens`` minus its special tokens). ``overlap`` is used by the
    ``tokens`` and ``sentences`` splitters. ``semantic_threshold`` is a cosine similarity in
    [-1, 1]; ``None`` means: split below the section's ``SEMANTIC_PERCENTILE``-th percentile.
    ``late_chunking``: a dense model reads each source's text in overlapping windows and a
    chunk's vector is the mean of its own tokens' states (``vectorstream.models._late``), so it
    carries the context around it; the chunks themselves are the same.
    """

    splitter: str = "markdown"
    chunk_tokens: int = 256
    overlap: int = 32
    semantic_threshold: float | None = None
    late_chunking: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.late_chunking, bool):
            raise ChunkingError(f"late_chunking must be True or False, got {self.late_chunking!r}")
        if self.splitter not in SPLITTERS:
            raise ChunkingError(
                f"unknown splitter {self.splitter!r}; choose one of: {', '.join(SPLITTERS)}"
            )
        # bool is an int subclass; True as a chunk size is a caller's mistake, not a size of 1.
        if not isinstance(self.chunk_tokens, int) or isinstance(self.chunk_tokens, bool):
            raise ChunkingError(f"chunk_tokens must be an integer, got {self.chunk_tokens!r}")
        if not isinstance(self.overlap, int) or isinstance(self.overlap, bool):
            raise ChunkingError(f"overlap must be an integer, got {self.overlap!r}")
        if self.chunk_tokens <= 0:
            raise ChunkingError(f"chunk_tokens must be positive, got {self.chunk_tokens}")
        if self.overlap < 0:
            raise ChunkingError(f"overlap must be zero or positive, got {self.overlap}")
        if self.overlap >= self.chunk_tokens:
            raise ChunkingError(
                f"overlap ({self.overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        threshold = self.semantic_threshold
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ChunkingError(f"semantic_threshold must be a number, got {threshold!r}")
            if not math.isfinite(threshold) or not -1.0 <= threshold <= 1.0:
                raise ChunkingError(
                    f"semantic_threshold is a cosine similarity in [-1, 1], got {threshold}"
                )
