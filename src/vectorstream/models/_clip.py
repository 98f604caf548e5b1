"""CLIP: images and texts embedded into one vector space (model kind "image").

    image folder ─▶ detect_image ─▶ load_image ─▶ ClipModel
        .embed_images([path | bytes | PIL image, ...])  ─▶ image tower ─▶ (n, dim)
        .embed(["a photo of a cat", ...])               ─▶ text tower  ─▶ (n, dim)

The kind's entry: :func:`detect_image` and :func:`load_image`. The parts, one job each:

- :mod:`._clip_folder`: what a folder says (a HuggingFace ``CLIPModel`` folder or a
  sentence-transformers one with a ``CLIPModel`` module);
- :mod:`._clip_onnx` / :mod:`._clip_torch`: the two towers as ONNX graphs (shipped or exported
  once into the cache), or transformers' ``CLIPModel`` on torch;
- :mod:`._clip_int8`: the int8 graphs and their gate over texts and images;
- :mod:`._clip_model`: :class:`ClipModel`, the loaded model (texts, images, truncation).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, ModelError
from ._backends import torch_available
from ._clip_folder import detect_image, read_clip_folder
from ._clip_int8 import ensure_int8
from ._clip_model import DEFAULT_IMAGE_BATCH, ClipModel
from ._clip_onnx import OnnxTowers, tower_graphs
from ._clip_torch import TorchTowers
from ._export import export_dir
from ._folder import files_identity

log = logging.getLogger("vectorstream.models.image")


def load_image(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    normalize: bool = True,
    batch_size: int = DEFAULT_IMAGE_BATCH,
    **unknown: object,
) -> ClipModel:
    """Load a CLIP folder as a :class:`ClipModel`.

    ``backend``: "onnx", "torch" or None (ONNX whenever graphs exist or torch can export them).
    ``quantized``: int8 graphs for both towers, kept only if they pass the int8 gate over the
    check texts and generated images. ``normalize``: unit-length vectors (cosine = dot product).
    ``batch_size``: images decoded and run together (bounds memory).
    """
    if unknown:
        raise ConfigError(
            f"unknown option(s) {sorted(unknown)} for an image model (it takes: normalize, "
            "batch_size)"
        )
    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graphs; it needs backend 'onnx'")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    folder = read_clip_folder(Path(path))
    identity = files_identity(folder.identity_files(), (folder.max_tokens, folder.dim))

    def build(towers: OnnxTowers | TorchTowers) -> ClipModel:
        return ClipModel(
            model_id=model_id,
            folder=folder,
            towers=towers,
            identity=identity,
            quantized=quantized,
            normalize=normalize,
            batch_size=batch_size,
        )

    if backend == "torch":
        return build(TorchTowers(folder.path, threads))
    can_export = torch_available() and folder.weights_path is not None
    try:
        graphs = tower_graphs(folder, model_id, identity, cache, export=can_export)
    except ModelError as exc:
        if backend == "onnx" or quantized:
            raise
        log.warning("CLIP ONNX export failed (%s); using the torch backend", exc)
        graphs = None
    if graphs is None:
        if backend == "onnx" or quantized or not torch_available():
            raise ModelError(
                f"{model_id} has no ONNX graphs (looked in {folder.path / 'onnx'} and "
                f"{export_dir(cache, model_id, identity)}) and torch is not installed to export "
                "them: pip install 'vectorstream[torch]'"
            )
        return build(TorchTowers(folder.path, threads))
    fp32 = OnnxTowers(*graphs, threads)
    if not quantized:
        return build(fp32)
    model = build(fp32)  # the fp32 model measures the int8 graphs against itself
    image_int8, text_int8, report = ensure_int8(
        model, graphs, export_dir(cache, model_id, identity), threads
    )
    log.info("CLIP %s", report.describe())
    return build(OnnxTowers(image_int8, text_int8, threads))


__all__ = ["detect_image", "load_image"]
