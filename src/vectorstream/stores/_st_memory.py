"""A tensor and its mapping held in memory for exact search (what a ``safetensors:`` reader serves).

Loading checks everything before anything is served: the header and the tensor's bytes
(``_st_format``), the mapping's rows (``_st_mapping``), that both are of one generation (the
tensor's metadata names the mapping's row count and SHA-256; a file from another tool has only
the row count to compare), and that every row is finite and non-zero. A load that finds the
tensor and the mapping of different generations tries again for a moment first: a writer renames
the mapping, then the tensor, and a reader may land between the two.

Rows are kept as unit-norm float32, in a ``_resident.ResidentSnapshot``: float32 rows that are
already unit-norm (what the pipeline's models write) stay memory-mapped, shared by every process
serving the file; others (float16, bfloat16, unnormalised) are converted once into memory.
Top-k and DIPR range are the snapshot's exact scans; a ``where`` filter selects rows through
per-key value → rows groups built on first use, with Python's equality as ``stores.matches``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._dipr import within
from ..errors import StoreError
from ..types import Hit
from ._common import where_items
from ._records import hit_from_row
from ._resident import ResidentSnapshot
from ._st_format import (
    DIGEST_KEY,
    GENERATION_KEY,
    ROWS_KEY,
    TensorInfo,
    as_float32,
    map_rows,
    read_info,
)
from ._st_mapping import LoadedMapping
from .base import Where

log = logging.getLogger("vectorstream.stores.safetensors")

ATTEMPTS = 20  # × RETRY_S: how long a reader waits for a writer between its two renames
RETRY_S = 0.05
_BLOCK = 65536  # rows per pass when checking and normalising
_UNIT = 1e-5  # rows within this of norm 1 are used as they are


@dataclass(frozen=True, slots=True)
class PairPaths:
    """Where a store's tensor and mapping are, the tensor's key, and the mapping's format."""

    tensor: Path
    mapping: Path
    key: str
    json_lines: bool


def pair_problem(info: TensorInfo, rows: int, sha256: str, paths: PairPaths) -> str | None:
    """Why the tensor and a mapping of ``rows`` rows and digest ``sha256`` do not belong
    together, or ``None``."""
    digest = info.metadata.get(DIGEST_KEY)
    if digest is not None and digest != sha256:
        return (
            f"{paths.tensor} and {paths.mapping} are of different generations (the tensor was "
            f"written with a mapping of SHA-256 {digest[:12]}…, the mapping file is "
            f"{sha256[:12]}…): copy both files of one ingest together, or ingest again"
        )
    claimed = info.metadata.get(ROWS_KEY)
    if info.rows != rows or (claimed is not None and claimed != str(info.rows)):
        return (
            f"{paths.tensor} holds {info.rows} rows under {info.key!r} but {paths.mapping} has "
            f"{rows}: a text is needed for every row, in the tensor's order"
        )
    return None


def read_pair(paths: PairPaths) -> tuple[TensorInfo, np.ndarray, LoadedMapping]:
    """The tensor (mapped) and the mapping of one generation, or ``StoreError`` saying why not."""
    for attempt in range(ATTEMPTS):
        try:
            with paths.tensor.open("rb") as fh:
                info = read_info(fh, paths.tensor, paths.key)
                raw = map_rows(fh, info)
        except FileNotFoundError as exc:
            raise StoreError(
                f"there is no safetensors file at {paths.tensor}; ingest into it first "
                f"(vectorstream ingest … --store safetensors:{paths.tensor})"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {paths.tensor}: {exc}") from exc
        mapping = LoadedMapping.read(paths.mapping, paths.json_lines)
        problem = pair_problem(info, len(mapping), mapping.sha256, paths)
        if problem is None:
            return info, raw, mapping
        if DIGEST_KEY not in info.metadata or attempt == ATTEMPTS - 1:
            raise StoreError(problem)
        time.sleep(RETRY_S)  # a writer between its two renames: the next look sees both new
    raise StoreError(f"cannot read a consistent pair at {paths.tensor}")


def unit_rows(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The rows as unit-norm float32 (``raw`` itself when it already is); ``StoreError`` naming
    the rows that are NaN, infinite or all zeros."""
    n = raw.shape[0]
    norms = np.empty(n, dtype=np.float32)
    bad: list[int] = []
    zero: list[int] = []
    for lo in range(0, n, _BLOCK):
        block = as_float32(raw[lo : lo + _BLOCK], info.dtype)
        finite = np.isfinite(block).all(axis=1)
        bad.extend((lo + np.flatnonzero(~finite)).tolist())
        with np.errstate(over="ignore", invalid="ignore"):
            norms[lo : lo + block.shape[0]] = np.linalg.norm(block, axis=1)
        zero.extend((lo + np.flatnonzero(finite & (norms[lo : lo + block.shape[0]] == 0))).tolist())
    for rows, what in ((bad, "NaN or infinite values"), (zero, "only zeros")):
        if rows:
            shown = ", ".join(str(r) for r in rows[:5]) + (", …" if len(rows) > 5 else "")
            raise StoreError(
                f"{info.path}: {len(rows)} of {n} rows of {info.key!r} hold {what} (rows "
                f"{shown}); such rows cannot be scored by cosine similarity: embed their texts "
                "again, or drop them from the tensor and the mapping"
            )
    if info.dtype == "F32" and (n == 0 or float(np.abs(norms - 1.0).max()) <= _UNIT):
        return raw  # already unit-norm float32: keep the memory map, shared between processes
    out = np.empty((n, info.dim), dtype=np.float32)
    for lo in range(0, n, _BLOCK):
        block = as_float32(raw[lo : lo + _BLOCK], info.dtype)
        out[lo : lo + block.shape[0]] = block / norms[lo : lo + block.shape[0], None]
    return out


class ServedPair:
    """One generation of a pair, checked and held for exact search."""

    def __init__(self, info: TensorInfo, snapshot: ResidentSnapshot) -> None:
        self.info = info
        self.snapshot = snapshot
        self._groups: dict[str, dict[Any, np.ndarray]] = {}
        self._metadata: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, paths: PairPaths) -> ServedPair:
        info, raw, mapping = read_pair(paths)
        vectors = unit_rows(raw, info)
        models = frozenset(m for m in mapping.rows.column("model").to_pylist() if m)
        generation = info.metadata.get(GENERATION_KEY, "0")
        version = int(generation) if generation.isdigit() else 0
        log.debug("loaded %s: %d rows of %d (%s)", paths.tensor, info.rows, info.dim, info.dtype)
        return cls(info, ResidentSnapshot(version, vectors, mapping.rows, models))

    def __len__(self) -> int:
        return len(self.snapshot)

    @property
    def nbytes(self) -> int:
        return self.snapshot.nbytes

    # -- filters -------------------------------------------------------------------------------

    def _values(self, key: str) -> list[Any]:
        if not key.startswith("metadata."):
            return list(self.snapshot.rows.column(key).to_pylist())
        if self._metadata is None:
            raw = self.snapshot.rows.column("metadata").to_pylist()
            self._metadata = [json.loads(m) if m else {} for m in raw]
        name = key[9:]
        return [m.get(name) for m in self._metadata]

    def _group(self, key: str) -> dict[Any, np.ndarray]:
        """Rows by value of ``key`` (built once per key; dict lookups give Python's equality)."""
        groups = self._groups.get(key)
        if groups is None:
            with self._lock:
                groups = self._groups.get(key)
                if groups is None:
                    found: dict[Any, list[int]] = {}
                    for i, value in enumerate(self._values(key)):
                        if value is not None and not isinstance(value, list | dict):
                            found.setdefault(value, []).append(i)
                    groups = {v: np.asarray(rows, dtype=np.int64) for v, rows in found.items()}
                    self._groups[key] = groups
        return groups

    def candidates(self, where: Where | None) -> np.ndarray | None:
        """The rows passing ``where`` in ascending order (``None``: no filter, every row)."""
        items = where_items(where)
        if not items:
            return None
        keep = np.ones(len(self), dtype=bool)
        for key, allowed in items:
            groups = self._group(key)
            mask = np.zeros(len(self), dtype=bool)
            for value in allowed:
                rows = groups.get(value)
                if rows is not None:
                    mask[rows] = True
            keep &= mask
        return np.flatnonzero(keep)

    # -- search --------------------------------------------------------------------------------

    def top(self, query: np.ndarray, k: int, where: Where | None) -> list[Hit]:
        rows = self.candidates(where)
        if rows is None:
            return self._hits(*self.snapshot.top(query, k))
        if rows.size == 0:
            return []
        scores = self.snapshot.scores(query)[rows]
        k = min(k, rows.size)
        part = np.argpartition(-scores, k - 1)[:k] if k < rows.size else np.arange(rows.size)
        order = part[np.argsort(-scores[part], kind="stable")]
        return self._hits(rows[order], scores[order])

    def within(self, query: np.ndarray, beta: float, limit: int, where: Where | None) -> list[Hit]:
        rows = self.candidates(where)
        if rows is None:
            return self._hits(*self.snapshot.within(query, beta, limit))
        if rows.size == 0:
            return []
        scores = self.snapshot.scores(query)[rows]
        inside = np.flatnonzero(within(scores, scores.max(), beta))
        order = inside[np.argsort(-scores[inside], kind="stable")][:limit]
        return self._hits(rows[order], scores[order])

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        found = self.snapshot.records(rows)
        return [hit_from_row(row, float(s)) for row, s in zip(found, scores.tolist(), strict=True)]


__all__ = ["PairPaths", "ServedPair", "pair_problem", "read_pair", "unit_rows"]
