"""int8 quantisation behind an accuracy gate: the int8 graph is kept only if its vectors stay close.

Over the built-in check set, cosine(int8, fp32) must have mean >= 0.99 and minimum >= 0.97;
otherwise the export is refused (unless forced). The figures are written next to the graph.

Every weight MatMul is quantised first (the fastest graph); where that misses the gate (on CPUs
without VNNI it can), the feed-forward output projections are kept in float32 and the gate asked
again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ._backends import OnnxBackend
from ._checkset import check_texts
from ._embedder import Embedder
from ._export import GATE_NAME, INT8_NAME, _temp_path, export_lock, quantize_int8
from ._folder import ModelFolder

log = logging.getLogger("vectorstream.models.gate")

MIN_MEAN_COSINE = 0.99
MIN_COSINE = 0.97
# How the graph is quantised, recorded beside it: a graph an older recipe made is made again
# (1: the feed-forward output projections always float32; 2: every weight MatMul tried first).
INT8_RECIPE = 2


@dataclass(frozen=True, slots=True)
class GateReport:
    """How close int8 vectors are to fp32 ones over the check set."""

    mean_cosine: float
    min_cosine: float
    texts: int
    min_mean: float = MIN_MEAN_COSINE
    min_min: float = MIN_COSINE
    forced: bool = False
    ffn_output_float: bool = False  # the feed-forward output projections stayed float32
    recipe: int = 1  # INT8_RECIPE when made; reports written before it existed are recipe 1

    @property
    def passed(self) -> bool:
        return self.mean_cosine >= self.min_mean and self.min_cosine >= self.min_min

    def describe(self) -> str:
        verdict = "passed" if self.passed else ("FAILED (forced)" if self.forced else "FAILED")
        kept = ", feed-forward outputs in float32" if self.ffn_output_float else ""
        return (
            f"int8{kept} vs fp32 over {self.texts} texts: mean cosine {self.mean_cosine:.4f} "
            f"(need >= {self.min_mean}), min {self.min_cosine:.4f} (need >= {self.min_min}): {verdict}"
        )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def measure(
    model_id: str, folder: ModelFolder, fp32: Path, int8: Path, threads: int | None
) -> GateReport:
    texts = check_texts()
    vectors = []
    for path in (fp32, int8):
        embedder = Embedder(
            model_id=model_id,
            folder=folder,
            backend=OnnxBackend(path, threads),
            identity="gate",
            normalize=True,
        )
        vectors.append(embedder.embed(texts))
    cos = cosine_rows(vectors[0], vectors[1])
    return GateReport(float(cos.mean()), float(cos.min()), len(texts))


def read_report(directory: Path) -> GateReport | None:
    path = directory / GATE_NAME
    if not path.is_file():
        return None
    try:
        return GateReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def ensure_int8(
    model_id: str,
    folder: ModelFolder,
    fp32: Path,
    directory: Path,
    *,
    force: bool = False,
    threads: int | None = None,
) -> tuple[Path, GateReport]:
    """The gated int8 graph in ``directory``, quantising ``fp32`` first if needed."""
    target = directory / INT8_NAME
    report = read_report(directory)
    if target.is_file() and report is not None and report.recipe == INT8_RECIPE:
        return target, report
    try:
        return _quantize_gated(model_id, folder, fp32, directory, force=force, threads=threads)
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc


def _quantize_gated(
    model_id: str,
    folder: ModelFolder,
    fp32: Path,
    directory: Path,
    *,
    force: bool,
    threads: int | None,
) -> tuple[Path, GateReport]:
    target = directory / INT8_NAME
    with export_lock(directory):
        report = read_report(directory)
        if target.is_file() and report is not None:
            if report.recipe == INT8_RECIPE:
                return target, report
            log.warning(
                "the int8 graph in %s was made by an older recipe: making it again", directory
            )
        log.warning("quantising %s to int8 (per-channel, dynamic) and checking accuracy", fp32)
        candidate = _temp_path(directory, ".int8.onnx")
        try:
            quantize_int8(fp32, candidate, keep_float=False)
            report = measure(model_id, folder, fp32, candidate, threads)
            log.warning("%s", report.describe())
            if not report.passed:
                quantize_int8(fp32, candidate, keep_float=True)
                report = replace(
                    measure(model_id, folder, fp32, candidate, threads), ffn_output_float=True
                )
                log.warning("%s", report.describe())
            if not report.passed and not force:
                raise ModelError(
                    f"int8 export of {model_id} refused: {report.describe()}; "
                    "use the fp32 model, or force the export"
                )
            if not report.passed:
                report = replace(report, forced=True)
            report = replace(report, recipe=INT8_RECIPE)
            tmp_report = _temp_path(directory, ".json")
            tmp_report.write_text(json.dumps(asdict(report), indent=2))
            os.replace(candidate, target)
            os.replace(tmp_report, directory / GATE_NAME)
        finally:
            candidate.unlink(missing_ok=True)
    return target, report


__all__ = [
    "INT8_RECIPE",
    "MIN_COSINE",
    "MIN_MEAN_COSINE",
    "GateReport",
    "cosine_rows",
    "ensure_int8",
    "measure",
]
