"""CLIP's int8 graphs: both towers quantised, kept only when they pass the int8 gate over the
check texts and generated images."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._checkset import check_texts
from ._clip_model import ClipModel
from ._clip_onnx import OnnxTowers
from ._embedder import pad_batch
from ._export import _temp_path, export_lock, quantize_int8
from ._gate import GateReport, cosine_rows

log = logging.getLogger("vectorstream.models.image")

IMAGE_INT8 = "image.int8.onnx"
TEXT_INT8 = "text.int8.onnx"
CLIP_GATE = "clip-int8-gate.json"


def gate_images(n: int = 24, seed: int = 11) -> list[Any]:
    """Generated test pictures for the int8 gate: gradients, shapes, stripes, noise, sizes."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:
        raise MissingDependencyError("pillow", "image") from exc

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        width, height = int(rng.integers(24, 400)), int(rng.integers(24, 400))
        kind = i % 4
        if kind == 0:
            y, x = np.mgrid[0:height, 0:width]
            base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1)], -1)
            pixels = np.concatenate([base, (base.sum(-1, keepdims=True) // 2)], -1)
            image = Image.fromarray(pixels.astype(np.uint8))
        elif kind == 1:
            image = Image.new(
                "RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3))
            )
            draw = ImageDraw.Draw(image)
            for _ in range(6):
                x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
                x1, y1 = x0 + int(rng.integers(4, width)), y0 + int(rng.integers(4, height))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 2:
            period = int(rng.integers(2, 24))
            stripes = ((np.arange(width) // period) % 2 * 255).astype(np.uint8)
            image = Image.fromarray(np.tile(stripes, (height, 1))).convert("RGB")
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        images.append(image)
    return images


def _measure(fp32: OnnxTowers, int8: OnnxTowers, model: ClipModel) -> GateReport:
    texts = check_texts()
    pixels = model.preprocess(gate_images())
    encodings = model._encoder.encode_batch(texts)  # not tokenize(): no truncation warnings
    ids, mask, _ = pad_batch(encodings, range(len(encodings)), model._pad_id)
    text_cos = cosine_rows(fp32.texts(ids, mask), int8.texts(ids, mask))
    image_cos = cosine_rows(fp32.images(pixels), int8.images(pixels))
    cos = np.concatenate([text_cos, image_cos])
    return GateReport(float(cos.mean()), float(cos.min()), len(cos))


def ensure_int8(
    model: ClipModel, fp32: tuple[Path, Path], directory: Path, threads: int | None
) -> tuple[Path, Path, GateReport]:
    """Both towers quantised, kept only when they pass the int8 gate over texts and images."""
    targets = (directory / IMAGE_INT8, directory / TEXT_INT8)
    report_path = directory / CLIP_GATE

    def ready() -> GateReport | None:
        if not all(t.is_file() for t in targets) or not report_path.is_file():
            return None
        try:
            return GateReport(**json.loads(report_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    report = ready()
    if report is not None:
        return targets[0], targets[1], report
    try:
        with export_lock(directory):
            report = ready()
            if report is not None:
                return targets[0], targets[1], report
            log.warning("quantising CLIP %s to int8 and checking accuracy", model.model_id)
            candidates = [_temp_path(directory, ".int8.onnx") for _ in targets]
            try:
                for source, candidate in zip(fp32, candidates, strict=True):
                    quantize_int8(source, candidate)
                report = _measure(
                    OnnxTowers(*fp32, threads),
                    OnnxTowers(candidates[0], candidates[1], threads),
                    model,
                )
                log.warning("CLIP %s", report.describe())
                if not report.passed:
                    raise ModelError(
                        f"int8 export of {model.model_id} refused: {report.describe()} "
                        "(over texts and images); use the fp32 model"
                    )
                for candidate, target in zip(candidates, targets, strict=True):
                    os.replace(candidate, target)
                tmp_report = _temp_path(directory, ".json")
                tmp_report.write_text(json.dumps(asdict(report), indent=2))
                os.replace(tmp_report, report_path)
            finally:
                for candidate in candidates:
                    candidate.unlink(missing_ok=True)
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelError(f"cannot write the int8 CLIP graphs into {directory}: {exc}") from exc
    return targets[0], targets[1], report


__all__ = ["CLIP_GATE", "IMAGE_INT8", "TEXT_INT8", "ensure_int8", "gate_images"]
