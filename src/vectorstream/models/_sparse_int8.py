"""The int8 SPLADE graph: kept only when each check text keeps its heaviest terms."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..types import SparseVector
from ._sparse_graph import OnnxEngine
from ._sparse_model import SparseEmbedder

log = logging.getLogger("vectorstream.models.sparse")

INT8_NAME = "splade.int8.onnx"
CHECK_NAME = "splade-int8-check.json"
# The int8 graph is kept only when the heaviest terms stay the same: of the top terms of each check
# text (at most _CHECK_TOP), this share on average, and this share for the worst text.
_CHECK_TOP = 20
MIN_MEAN_OVERLAP = 0.9
MIN_OVERLAP = 0.7


@dataclass(frozen=True, slots=True)
class Int8Check:
    """How well the int8 graph keeps each check text's heaviest terms (share of its top terms)."""

    mean_overlap: float
    min_overlap: float
    n_texts: int
    top: int

    @property
    def passed(self) -> bool:
        return self.mean_overlap >= MIN_MEAN_OVERLAP and self.min_overlap >= MIN_OVERLAP

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return (
            f"int8 check {verdict}: top-{self.top} term overlap with fp32 mean "
            f"{self.mean_overlap:.3f} (needs {MIN_MEAN_OVERLAP}), worst {self.min_overlap:.3f} "
            f"(needs {MIN_OVERLAP}) over {self.n_texts} texts"
        )


def top_overlap(
    reference: SparseVector, other: SparseVector, top: int = _CHECK_TOP
) -> float | None:
    """Share of ``reference``'s ``top`` heaviest terms that are among ``other``'s as many heaviest
    (None when ``reference`` has no terms)."""
    k = min(top, len(reference.indices))
    if k == 0:
        return None
    mine = set(reference.indices[np.argsort(-reference.values, kind="stable")[:k]].tolist())
    theirs = set(other.indices[np.argsort(-other.values, kind="stable")[:k]].tolist())
    return len(mine & theirs) / k


def ensure_int8(model: SparseEmbedder, fp32: Path, directory: Path, threads: int | None) -> Path:
    """The checked int8 graph in ``directory``, quantising ``fp32`` first if needed."""
    from ._checkset import check_texts
    from ._export import export_lock, quantize_int8

    target = directory / INT8_NAME
    report = directory / CHECK_NAME
    if target.is_file() and report.is_file():
        return target
    with export_lock(directory):
        if target.is_file() and report.is_file():
            return target
        log.warning("quantising %s to int8 and checking its top terms", fp32)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".int8.onnx")
        os.close(fd)
        candidate = Path(name)
        try:
            quantize_int8(fp32, candidate)
            texts = check_texts(32)
            reference = model.embed(texts)
            quantized = model._with_engine(OnnxEngine(candidate, threads)).embed(texts)
            shares = [
                s
                for a, b in zip(reference, quantized, strict=True)
                if a.sparse is not None and b.sparse is not None
                if (s := top_overlap(a.sparse, b.sparse)) is not None
            ]
            check = Int8Check(
                float(np.mean(shares)) if shares else 1.0,
                float(np.min(shares)) if shares else 1.0,
                len(shares),
                _CHECK_TOP,
            )
            log.warning("%s", check.describe())
            if not check.passed:
                raise ModelError(
                    f"int8 graph of {model.model_id} refused: {check.describe()}; use the fp32 model"
                )
            report.write_text(json.dumps({**asdict(check), "passed": True}))
            os.replace(candidate, target)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    return target


__all__ = [
    "CHECK_NAME",
    "INT8_NAME",
    "MIN_MEAN_OVERLAP",
    "MIN_OVERLAP",
    "Int8Check",
    "ensure_int8",
    "top_overlap",
]
