"""What a CLIP folder says: a HuggingFace ``CLIPModel`` folder (``config.json`` with ``model_type:
clip``, weights, ``tokenizer.json`` and the image processor's configuration), or a
sentence-transformers folder whose ``modules.json`` names a ``CLIPModel`` module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ._images import ImageSettings, read_image_settings

# Graphs a folder may ship: the transformers.js / Optimum per-tower layout.
_SHIPPED_IMAGE = "onnx/vision_model.onnx"
_SHIPPED_TEXT = "onnx/text_model.onnx"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_MAX_JSON = 4 << 20  # detect_image reads only small files: a config is a few kilobytes


def _small_json(path: Path) -> Any:
    """A small JSON file's content, or None (missing, too big, unreadable): never raises."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_clip_config(config: Any) -> bool:
    if not isinstance(config, dict):
        return False
    architectures = config.get("architectures")
    names = architectures if isinstance(architectures, list) else []
    return config.get("model_type") == "clip" or "CLIPModel" in names


def _clip_dir(path: Path) -> Path | None:
    """The CLIP model folder inside ``path``: itself, or the sentence-transformers CLIP module."""
    if _is_clip_config(_small_json(path / "config.json")):
        return path
    modules = _small_json(path / "modules.json")
    if isinstance(modules, list):
        for module in modules:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("CLIPModel"):
                sub = path / str(module.get("path", ""))
                if _is_clip_config(_small_json(sub / "config.json")):
                    return sub
    return None


def detect_image(path: Path) -> bool:
    """Whether ``path`` holds a CLIP model (its ``config.json`` or ``modules.json`` says so)."""
    try:
        return _clip_dir(Path(path)) is not None
    except (OSError, ValueError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class ClipFolder:
    """What a CLIP folder says: sizes, tokenizer, image preprocessing, shipped graphs."""

    path: Path  # the folder with config.json, weights, tokenizer and processor configs
    image_settings: ImageSettings
    image_size: int  # the vision tower's input: image_size x image_size pixels
    dim: int  # projection width, shared by both towers
    max_tokens: int  # text positions, special tokens included
    tokenizer_path: Path
    pad_token: str | None
    weights_path: Path | None
    onnx_image: Path | None
    onnx_text: Path | None

    def identity_files(self) -> list[Path]:
        files = [self.weights_path] if self.weights_path is not None else []
        files += [g for g in (self.onnx_image, self.onnx_text) if g is not None]
        names = (
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            "processor_config.json",
        )
        return files + [self.path / n for n in names]


def _token_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def read_clip_folder(path: Path) -> ClipFolder:
    """Parse a CLIP folder; raise ``ModelError`` naming what is missing or unsupported."""
    root = _clip_dir(path)
    if root is None:
        raise ModelError(f"{path} is not a CLIP model folder (its config.json says otherwise)")
    config = _small_json(root / "config.json")
    assert isinstance(config, dict)  # _clip_dir checked it
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or {}
    tokenizer_path = root / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"CLIP folder {root} has no tokenizer.json; only fast-tokenizer folders are supported"
        )
    settings = read_image_settings(root)
    image_size = int(vision.get("image_size", 224))
    if settings.output_size != (image_size, image_size):
        raise ModelError(
            f"{root}: the image processor makes {settings.output_size} images but the vision "
            f"tower takes {image_size}x{image_size}"
        )
    tok_config = _small_json(root / "tokenizer_config.json") or {}
    limits = [text.get("max_position_embeddings", 77), tok_config.get("model_max_length")]
    max_tokens = min(v for v in limits if isinstance(v, int) and 0 < v < 1_000_000)
    pad = _token_name(tok_config.get("pad_token")) or _token_name(tok_config.get("eos_token"))
    weights = next((root / n for n in _WEIGHT_FILES if (root / n).is_file()), None)
    onnx_image, onnx_text = root / _SHIPPED_IMAGE, root / _SHIPPED_TEXT
    shipped = onnx_image.is_file() and onnx_text.is_file()
    return ClipFolder(
        path=root,
        image_settings=settings,
        image_size=image_size,
        dim=int(config.get("projection_dim", 512)),
        max_tokens=max_tokens,
        tokenizer_path=tokenizer_path,
        pad_token=pad,
        weights_path=weights,
        onnx_image=onnx_image if shipped else None,
        onnx_text=onnx_text if shipped else None,
    )


__all__ = ["ClipFolder", "detect_image", "read_clip_folder"]
