"""Images into model inputs: decode with Pillow, then preprocess exactly as the model's processor.

    path | bytes | PIL image ─▶ decode (first frame) ─▶ EXIF orientation ─▶ RGB
                             ─▶ resize the shortest edge ─▶ centre crop ─▶ rescale ─▶ normalise
                             ─▶ float32 (3, H, W)

The steps and their numerics follow transformers' Pillow image processor for CLIP
(``CLIPImageProcessor`` as read from the folder's ``preprocessor_config.json``): the same Pillow
conversions and resampling filter, the same crop arithmetic (zero padding when the crop is larger
than the image), the same float64 rescale and float32 normalisation, so the pixel values are equal.
What the processor leaves to the caller is done here: EXIF orientation is applied and an animated
image contributes its first frame.

Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is left as it is: an image over
twice the limit is a :class:`~vectorstream.errors.ParseError`, one over the limit is decoded with a
warning in the log. Truncated files and non-images are ``ParseError`` too.

Pillow is imported inside the functions: the package imports without it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ModelError, ParseError

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger("vectorstream.models.image")

# What an image input may be: a file path, the encoded bytes of a file, or a decoded PIL image.
ImageInput = Union[str, os.PathLike[str], bytes, bytearray, memoryview, "PILImage.Image"]

# The processor's own defaults (transformers' CLIPImageProcessor), for keys a config leaves out.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DEFAULTS: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,  # bicubic
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": _CLIP_MEAN,
    "image_std": _CLIP_STD,
}
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

# The processor resizes the whole image before cropping; for a very long strip (a 1-pixel rule
# 10,000 wide) that intermediate image is enormous. Above this many pixels only the cropped
# region is resampled (Pillow's ``box``), which can differ from the processor by a few levels.
MAX_RESIZED_PIXELS = 1 << 24

_warnings_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """How a model's processor turns an image into pixel values (``preprocessor_config.json``)."""

    shortest_edge: int | None  # resize so the shorter side has this length (aspect kept)
    resize_to: tuple[int, int] | None  # or resize to exactly (height, width)
    resample: int  # a PIL resampling filter (3 = bicubic)
    crop: tuple[int, int] | None  # centre crop to (height, width); None = no crop
    rescale_factor: float | None  # None = no rescale
    mean: tuple[float, float, float] | None  # None = no normalisation
    std: tuple[float, float, float] | None

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, when the settings fix it."""
        if self.crop is not None:
            return self.crop
        return self.resize_to

    def describe(self) -> str:
        if self.resize_to is not None:
            resize = f"resize to {self.resize_to[0]}x{self.resize_to[1]}"
        elif self.shortest_edge is not None:
            resize = f"shortest edge {self.shortest_edge}"
        else:
            resize = "no resize"
        crop = f", crop {self.crop[0]}x{self.crop[1]}" if self.crop else ""
        return f"{resize} ({_RESAMPLE_NAMES.get(self.resample, self.resample)}){crop}"


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Mapping) and isinstance(value.get("height"), int):
        width = value.get("width")
        if isinstance(width, int):
            return (int(value["height"]), width)
    raise ModelError(f"image processor {what} {value!r} is not a size this loader understands")


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    if isinstance(value, list | tuple) and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ModelError(f"image processor {what} {value!r} must be one number or three")


def image_settings(config: Mapping[str, Any]) -> ImageSettings:
    """Settings from an image processor's configuration (missing keys: CLIP's defaults)."""
    cfg = {**_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    shortest: int | None = None
    resize_to: tuple[int, int] | None = None
    if cfg["do_resize"]:
        size = cfg["size"]
        if isinstance(size, int):  # old configs: an int is the shortest edge for CLIP
            shortest = size
        elif isinstance(size, Mapping) and set(size) == {"shortest_edge"}:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, Mapping) and set(size) == {"height", "width"}:
            resize_to = _pair(size, "size")
        else:
            raise ModelError(
                f"image processor size {size!r} is not supported "
                "(supported: shortest_edge, or height and width)"
            )
    resample = cfg["resample"]
    if not isinstance(resample, int) or resample not in _RESAMPLE_NAMES:
        raise ModelError(f"image processor resample {resample!r} is not a Pillow filter")
    crop = _pair(cfg["crop_size"], "crop_size") if cfg["do_center_crop"] else None
    if cfg.get("do_convert_rgb") is False:
        log.debug("do_convert_rgb=False ignored: the model takes three channels")
    return ImageSettings(
        shortest_edge=shortest,
        resize_to=resize_to,
        resample=resample,
        crop=crop,
        rescale_factor=float(cfg["rescale_factor"]) if cfg["do_rescale"] else None,
        mean=_triple(cfg["image_mean"], "image_mean") if cfg["do_normalize"] else None,
        std=_triple(cfg["image_std"], "image_std") if cfg["do_normalize"] else None,
    )


def read_image_settings(folder: Path) -> ImageSettings:
    """The image settings a model folder saves: ``preprocessor_config.json`` (the hub layout) or
    the ``image_processor`` part of ``processor_config.json`` (what newer transformers write)."""
    for name, key in (
        ("preprocessor_config.json", None),
        ("processor_config.json", "image_processor"),
    ):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        if key is not None:
            data = data.get(key) if isinstance(data, dict) else None
            if data is None:
                continue
        if not isinstance(data, dict):
            raise ModelError(f"{path} does not hold an image processor configuration")
        return image_settings(data)
    raise ModelError(
        f"model folder {folder} has no image processor configuration "
        "(preprocessor_config.json or processor_config.json)"
    )


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ModelError("Pillow is not installed: pip install pillow") from exc
    return Image


def describe_input(source: object) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    size = getattr(source, "size", None)
    return f"<image {size[0]}x{size[1]}>" if isinstance(size, tuple) else type(source).__name__


def open_image(source: ImageInput) -> PILImage.Image:
    """Decode ``source`` (first frame), with its EXIF orientation applied. Raises ``ParseError``.

    A PIL image given by the caller is used at its current frame and never modified (a rotated
    copy is made when its EXIF asks for a rotation).
    """
    Image = _pil()
    from PIL import UnidentifiedImageError

    name = describe_input(source)
    if isinstance(source, Image.Image):
        return _oriented(source, name, in_place=False)
    if isinstance(source, bytes | bytearray | memoryview):
        stream: Any = io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        stream = os.fspath(source)
    else:
        raise TypeError(
            f"an image input is a path, bytes or a PIL image, not {type(source).__name__}"
        )
    try:
        # Pillow warns (a Python warning) when an image is over its limit; that becomes a log
        # line here. catch_warnings swaps process-wide state, so only the header read runs
        # under it, one thread at a time; decoding happens outside.
        with _warnings_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image = Image.open(stream)
        for warning in caught:
            if issubclass(warning.category, Image.DecompressionBombWarning):
                log.warning("%s: %s", name, warning.message)
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        try:
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
        except BaseException:
            image.close()  # the file handle Pillow keeps for lazy decoding
            raise
    except Image.DecompressionBombError as exc:
        raise ParseError(
            f"{name}: refused as a possible decompression bomb ({exc}); Pillow's limit is "
            f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ParseError(f"{name}: not an image format Pillow can read") from exc
    except FileNotFoundError as exc:
        raise ParseError(f"{name}: no such file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        # Truncated or corrupt data: Pillow reports these as OSError ("image file is
        # truncated"), SyntaxError (bad headers) or ValueError, depending on the plugin.
        raise ParseError(f"{name}: cannot decode the image: {exc}") from exc
    return _oriented(image, name, in_place=True)


def _oriented(image: PILImage.Image, name: str, *, in_place: bool) -> PILImage.Image:
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not lose the picture itself
        log.debug("%s: unreadable EXIF data ignored", name)
        return image
    if orientation in (1, None):
        return image
    try:
        if in_place:
            ImageOps.exif_transpose(image, in_place=True)
            return image
        rotated = ImageOps.exif_transpose(image)
        return rotated if rotated is not None else image
    except (OSError, ValueError, SyntaxError) as exc:
        raise ParseError(f"{name}: cannot apply the EXIF orientation: {exc}") from exc


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """RGB as the processor makes it: transparency composited onto white, other modes converted
    by Pillow (L, P, CMYK, I;16, 1, ...)."""
    Image = _pil()
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:  # a mode Pillow cannot convert (e.g. some float modes)
        raise ParseError(f"cannot convert a {image.mode} image to RGB: {exc}") from exc


def _resized_size(width: int, height: int, settings: ImageSettings) -> tuple[int, int]:
    """(width, height) after the resize step, with the processor's integer arithmetic."""
    if settings.resize_to is not None:
        return settings.resize_to[1], settings.resize_to[0]
    if settings.shortest_edge is None:
        return width, height
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = settings.shortest_edge, int(settings.shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _crop_box(width: int, height: int, crop: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centre crop, as the processor computes it (negative: padding)."""
    return (height - crop[0]) // 2, (width - crop[1]) // 2


def _center_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Centre crop of an (H, W, C) array, zero-padded where the crop is larger (the processor's)."""
    height, width = pixels.shape[:2]
    ch, cw = crop
    top, left = _crop_box(width, height, crop)
    if top >= 0 and left >= 0 and top + ch <= height and left + cw <= width:
        return pixels[top : top + ch, left : left + cw]
    new_h, new_w = max(ch, height), max(cw, width)
    padded = np.zeros((new_h, new_w, pixels.shape[2]), dtype=pixels.dtype)
    pad_top = math.ceil((new_h - height) / 2)
    pad_left = math.ceil((new_w - width) / 2)
    padded[pad_top : pad_top + height, pad_left : pad_left + width] = pixels
    top += pad_top
    left += pad_left
    return padded[max(0, top) : min(new_h, top + ch), max(0, left) : min(new_w, left + cw)]


def _resize(image: PILImage.Image, settings: ImageSettings) -> np.ndarray:
    """The resize step (and the crop when it is cheaper to resample only the cropped part)."""
    width, height = image.size
    new_w, new_h = _resized_size(width, height, settings)
    if (new_w, new_h) == (width, height):
        return np.asarray(image)
    crop = settings.crop
    if crop is not None and new_w * new_h > MAX_RESIZED_PIXELS:
        top, left = _crop_box(new_w, new_h, crop)
        if top >= 0 and left >= 0:
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + crop[1]) * sx, (top + crop[0]) * sy)
            log.debug(
                "%dx%d image: resampling only the %dx%d crop of its %dx%d resize",
                width,
                height,
                crop[1],
                crop[0],
                new_w,
                new_h,
            )
            return np.asarray(image.resize((crop[1], crop[0]), settings.resample, box=box))
    return np.asarray(image.resize((new_w, new_h), settings.resample))


def preprocess(image: PILImage.Image, settings: ImageSettings) -> np.ndarray:
    """Pixel values of one decoded image: float32, shape (3, H, W)."""
    pixels = _resize(to_rgb(image), settings)
    if settings.crop is not None:
        pixels = _center_crop(pixels, settings.crop)
    values: np.ndarray
    if settings.rescale_factor is not None:
        # float64 first, then float32: the processor's order, so the values are equal.
        values = (pixels.astype(np.float64) * settings.rescale_factor).astype(np.float32)
    else:
        values = pixels.astype(np.float32)
    if settings.mean is not None and settings.std is not None:
        mean = np.asarray(settings.mean, dtype=np.float32)
        std = np.asarray(settings.std, dtype=np.float32)
        values = (values - mean) / std
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def load_pixels(source: ImageInput, settings: ImageSettings) -> np.ndarray:
    """Decode and preprocess one image input: float32 (3, H, W). Raises ``ParseError``."""
    image = open_image(source)
    try:
        return preprocess(image, settings)
    except ParseError as exc:
        raise ParseError(f"{describe_input(source)}: {exc}") from exc
    except MemoryError as exc:
        raise ParseError(f"{describe_input(source)}: out of memory preprocessing it") from exc
    finally:
        if image is not source:
            image.close()


__all__ = [
    "MAX_RESIZED_PIXELS",
    "ImageInput",
    "ImageSettings",
    "describe_input",
    "image_settings",
    "load_pixels",
    "open_image",
    "preprocess",
    "read_image_settings",
    "to_rgb",
]
