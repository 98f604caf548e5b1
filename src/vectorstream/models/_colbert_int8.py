"""The int8 ColBERT graph: quantised once, kept only if its token vectors stay close to fp32."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ._checkset import check_texts
from ._colbert_folder import ColbertFolder, peek_json
from ._colbert_model import ColbertEmbedder
from ._colbert_onnx import OnnxRunner
from ._export import _temp_path, export_lock, quantize_int8
from ._gate import MIN_MEAN_COSINE

log = logging.getLogger("vectorstream.models.multivector")

INT8_GRAPH_NAME = "colbert.int8.onnx"
INT8_GATE_NAME = "colbert-int8-gate.json"


def _gate_cosines(
    folder: ColbertFolder, model_id: str, fp32: Any, int8: Any
) -> tuple[float, float, int]:
    """Mean and minimum per-token cosine of int8 to fp32 over the check texts (both sides)."""
    texts = check_texts()
    cosines: list[np.ndarray] = []
    models = [
        ColbertEmbedder(model_id=model_id, folder=folder, runner=r, identity="gate")
        for r in (fp32, int8)
    ]
    for method in ("embed", "embed_queries"):
        a, b = (getattr(m, method)(texts) for m in models)
        for x, y in zip(a, b, strict=True):
            u = np.asarray(x.multivector, dtype=np.float64)
            v = np.asarray(y.multivector, dtype=np.float64)
            den = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
            cosines.append((u * v).sum(axis=1) / np.maximum(den, 1e-12))
    flat = np.concatenate(cosines)
    return float(flat.mean()), float(flat.min()), int(flat.size)


def ensure_int8(
    folder: ColbertFolder, model_id: str, fp32: Path, directory: Path, threads: int | None
) -> Path:
    """The int8 graph beside ``fp32``, quantised once and kept only if its token vectors stay
    within ``MIN_MEAN_COSINE`` (mean per-token cosine) of the fp32 ones."""
    target = directory / INT8_GRAPH_NAME
    report_path = directory / INT8_GATE_NAME

    def verdict() -> dict[str, Any] | None:
        report = peek_json(report_path)
        return report if isinstance(report, dict) and "mean_cosine" in report else None

    def refuse(report: dict[str, Any]) -> ModelError:
        return ModelError(
            f"int8 export of {model_id} refused: mean per-token cosine to fp32 "
            f"{report['mean_cosine']:.4f} over {report['tokens']} tokens (need >= "
            f"{MIN_MEAN_COSINE}); use the fp32 model"
        )

    with export_lock(directory):
        report = verdict()
        if report is not None and not report.get("passed"):
            raise refuse(report)
        if report is not None and target.is_file():
            return target
        log.warning("quantising %s to int8 and checking per-token accuracy", fp32)
        candidate = _temp_path(directory, ".int8.onnx")
        try:
            quantize_int8(fp32, candidate)
            mean, low, count = _gate_cosines(
                folder,
                model_id,
                OnnxRunner(fp32, threads, folder.dim, False),
                OnnxRunner(candidate, threads, folder.dim, False),
            )
            report = {
                "mean_cosine": mean,
                "min_cosine": low,
                "tokens": count,
                "min_mean": MIN_MEAN_COSINE,
                "passed": mean >= MIN_MEAN_COSINE,
            }
            log.warning("int8 vs fp32: mean per-token cosine %.4f, min %.4f", mean, low)
            tmp_report = _temp_path(directory, ".json")
            tmp_report.write_text(json.dumps(report, indent=2))
            if report["passed"]:
                os.replace(candidate, target)
            os.replace(tmp_report, report_path)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    if not report["passed"]:
        raise refuse(report)
    return target


__all__ = ["INT8_GATE_NAME", "INT8_GRAPH_NAME", "ensure_int8"]
