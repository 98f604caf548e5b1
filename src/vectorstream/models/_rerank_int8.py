"""The int8 logits graph, kept only when it ranks the check pairs as fp32 does."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ._rerank_folder import RerankFolder
from ._rerank_model import Reranker
from ._rerank_onnx import OnnxLogits

log = logging.getLogger("vectorstream.models.rerank")

INT8_GRAPH_NAME = "rerank.int8.onnx"
INT8_REPORT_NAME = "rerank-int8-gate.json"
# int8 is kept only if it ranks the check pairs as fp32 does (Spearman over their logits).
MIN_SPEARMAN = 0.99


def _gate_pairs() -> list[tuple[str, str]]:
    from ._checkset import check_texts

    texts = check_texts()
    queries = [t for t in texts if t and len(t) < 40][:8] or ["query"]
    return [(queries[i % len(queries)], text) for i, text in enumerate(texts * 2)]


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 1.0


def ensure_int8(
    model_id: str, folder: RerankFolder, fp32: Path, directory: Path, threads: int | None
) -> Path:
    from ._export import _temp_path, export_lock, quantize_int8

    target = directory / INT8_GRAPH_NAME
    report_file = directory / INT8_REPORT_NAME
    if target.is_file() and report_file.is_file():
        return target
    with export_lock(directory):
        if target.is_file() and report_file.is_file():
            return target
        log.warning("quantising %s to int8 and checking that it ranks as fp32 does", fp32)
        candidate = _temp_path(directory, ".int8.onnx")
        try:
            quantize_int8(fp32, candidate)
            pairs = _gate_pairs()
            logits = []
            for graph in (fp32, candidate):
                model = Reranker(
                    model_id=model_id,
                    folder=folder,
                    engine=OnnxLogits(graph, threads),
                    backend="onnx",
                    identity="gate",
                )
                logits.append(model.logits_tokenized(model.tokenize_pairs(pairs)))
            rho = _spearman(logits[0], logits[1])
            report = {"spearman": rho, "min_spearman": MIN_SPEARMAN, "pairs": len(pairs)}
            log.warning("int8 vs fp32 over %d pairs: Spearman %.4f", len(pairs), rho)
            if rho < MIN_SPEARMAN:
                raise ModelError(
                    f"int8 export of {model_id} refused: over {len(pairs)} check pairs its scores "
                    f"rank with Spearman {rho:.4f} to fp32's (need >= {MIN_SPEARMAN}); use fp32"
                )
            tmp_report = _temp_path(directory, ".json")
            tmp_report.write_text(json.dumps(report, indent=2))
            os.replace(candidate, target)
            os.replace(tmp_report, report_file)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    return target


__all__ = ["INT8_GRAPH_NAME", "MIN_SPEARMAN", "ensure_int8"]
