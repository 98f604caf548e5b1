"""Images the service receives or shows: data-URI inputs for image models, and thumbnails.

An image input to ``POST /v1/embeddings`` is a data URI, ``data:image/png;base64,...`` (or jpeg,
webp, gif). Only its header is read here (Pillow opens lazily), to refuse what is not one of those
formats or holds more than ``max_image_pixels`` pixels before anything is decoded; the model
decodes the bytes itself, with its processor's own steps. Every refusal is an ``APIError`` (400):
a client's bad image is never a server error.

Pillow is imported inside the functions, as the models do.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import APIError

log = logging.getLogger("vectorstream.server.images")

IMAGE_URI_PREFIX = "data:image/"
# Media types a data URI may name, and the Pillow decoders they allow (no other decoder runs).
MEDIA_TYPES: dict[str, str] = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",  # not registered, but common enough to accept
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")
THUMBNAIL_SIDE = 256  # the longest side of a thumbnail, in pixels
THUMBNAIL_MAX_BYTES = 50 * 1024 * 1024  # the largest image file a thumbnail is made of


def is_image_uri(text: str) -> bool:
    """Whether an input is meant as an image (``data:image/...``, any letter case)."""
    return text[: len(IMAGE_URI_PREFIX)].lower() == IMAGE_URI_PREFIX


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One decoded data URI: the encoded bytes, and what its header says."""

    position: int  # the index of the input in the request
    data: bytes
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class ImageTooLarge(ValueError):
    """An image with more pixels than allowed (ours, or Pillow's decompression-bomb limit)."""


def _refuse(position: int, message: str, code: str = "invalid_image") -> APIError:
    return APIError(400, f"input[{position}] {message}", param="input", code=code)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # a core dependency; still, say what is missing
        raise APIError(500, "Pillow is not installed: pip install pillow") from exc
    return Image


def header(data: bytes, formats: Sequence[str]) -> tuple[str, int, int]:
    """``(format, width, height)`` from an image's header, decoding no pixels.

    Raises ``ValueError`` for anything that is not one of ``formats`` or cannot be read, and
    ``ImageTooLarge`` for what Pillow refuses as a decompression bomb.
    """
    image_module = _pil()
    from PIL import UnidentifiedImageError

    from ..models._images import _warnings_lock

    try:
        # Pillow warns (a process-wide warning) on images past its own size limit; they are
        # refused below anyway. The models' lock guards the same process-wide warning state.
        with _warnings_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            with image_module.open(io.BytesIO(data), formats=list(formats)) as image:
                return str(image.format), int(image.size[0]), int(image.size[1])
    except image_module.DecompressionBombError as exc:
        raise ImageTooLarge(f"is refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"is not a {'/'.join(formats)} image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"has a damaged image header: {exc}") from exc


def decode_image_uri(text: str, position: int, max_pixels: int) -> ImageInput:
    """The image a ``data:image/...;base64,`` input holds, checked; ``APIError`` (400) otherwise."""
    head, comma, payload = text.partition(",")
    parts = [p.strip().lower() for p in head[len("data:") :].split(";")]
    media_type, params = parts[0], parts[1:]
    if not comma or not params or params[-1] != "base64":
        raise _refuse(position, "is not a base64 data URI: send data:image/png;base64,<data>")
    fmt = MEDIA_TYPES.get(media_type)
    if fmt is None:
        raise _refuse(
            position,
            f"is a {media_type} data URI; image inputs are PNG, JPEG, WebP or GIF",
            code="unsupported_image_type",
        )
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _refuse(position, f"holds invalid base64: {exc}") from exc
    if not data:
        raise _refuse(position, "holds no image data")
    try:
        # Any of the four formats is read, whatever the URI says: a mislabelled PNG is still a PNG.
        found, width, height = header(data, FORMATS)
    except ImageTooLarge as exc:
        raise _refuse(position, str(exc), code="image_too_large") from exc
    except ValueError as exc:
        raise _refuse(position, str(exc)) from exc
    if width * height > max_pixels:
        raise _refuse(
            position,
            f"is {width}x{height} pixels, more than the limit of {max_pixels:,}; scale it down "
            "(the model sees it at a few hundred pixels a side)",
            code="image_too_large",
        )
    return ImageInput(position, data, found, width, height)


def pixel_groups(images: Sequence[ImageInput], budget: int) -> list[list[int]]:
    """Consecutive runs of ``images`` (indices) holding at most ``budget`` pixels (at least one
    image each): what is decoded at once, so memory stays bounded whatever a request holds."""
    groups: list[list[int]] = []
    current: list[int] = []
    pixels = 0
    for i, image in enumerate(images):
        if current and pixels + image.pixels > budget:
            groups.append(current)
            current, pixels = [], 0
        current.append(i)
        pixels += image.pixels
    if current:
        groups.append(current)
    return groups


def undecodable(images: Sequence[ImageInput]) -> tuple[ImageInput, str] | None:
    """The first image whose pixels Pillow cannot decode, and why; ``None`` if all decode.

    Used only after the model refused a group, to name the input at fault without running the
    model again.
    """
    image_module = _pil()
    for image in images:
        try:
            with image_module.open(io.BytesIO(image.data), formats=list(FORMATS)) as opened:
                opened.load()
        except Exception as exc:  # any decoder failure names this input
            return image, f"{type(exc).__name__}: {exc}"
    return None


def thumbnail(data: bytes, max_pixels: int, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG at most ``side`` pixels a side of an encoded image; ``ValueError`` if it is not a
    readable PNG/JPEG/WebP/GIF of at most ``max_pixels`` pixels."""
    image_module = _pil()
    from PIL import ImageOps

    _, width, height = header(data, FORMATS)
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} pixels is over the limit of {max_pixels:,}")
    try:
        with image_module.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            image.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
            image.thumbnail((side, side))
            shown = ImageOps.exif_transpose(image) or image
            if "A" in shown.getbands() or shown.info.get("transparency") is not None:
                rgba = shown.convert("RGBA")
                background = image_module.new("RGBA", rgba.size, (255, 255, 255, 255))
                shown = image_module.alpha_composite(background, rgba)
            out = io.BytesIO()
            shown.convert("RGB").save(out, format="JPEG", quality=85)
            return out.getvalue()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot decode the image: {exc}") from exc


__all__ = [
    "FORMATS",
    "IMAGE_URI_PREFIX",
    "MEDIA_TYPES",
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_SIDE",
    "ImageInput",
    "ImageTooLarge",
    "decode_image_uri",
    "header",
    "is_image_uri",
    "pixel_groups",
    "thumbnail",
    "undecodable",
]
