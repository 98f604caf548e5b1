"""Images as image sections, for a pipeline that has an image embedding model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ParseError
from ..types import Section, Source
from ._options import ParseOptions
from ._read import open_binary, read_error
from ._registry import Warn

_MEDIA_TYPES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
)


def image_media_type(head: bytes) -> str | None:
    """The media type of an image from its first bytes, or ``None``."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:12] in (b"ftypavif",):
        return "image/avif"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "image/heic"
    if head.lstrip()[:5] in (b"<svg ", b"<?xml") and b"<svg" in head[:1024]:
        return "image/svg+xml"
    for magic, media_type in _MEDIA_TYPES:
        if head.startswith(magic):
            return media_type
    return None


@dataclass(frozen=True, slots=True)
class ImageSectionParser:
    """One section per image, with the bytes in ``Section.image`` and empty ``text``.

    Not registered by default (text ingest has no image model: the default image parser
    reports that instead). Register it where an image embedder consumes the sections:
    ``DEFAULT_REGISTRY.with_parser("image", ImageSectionParser())``; the pipeline does so for an
    image model. ``check`` decodes the image once here (in the parsing worker), so a truncated
    file, a decompression bomb or bytes no decoder reads fail this source alone, as a parse
    error, rather than the model's batch. Pillow's decompression-bomb limit stays on.
    """

    max_bytes: int = 50 * 1024 * 1024
    check: bool = True

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        with open_binary(source) as fh:
            try:
                data = fh.read(self.max_bytes + 1)
            except OSError as exc:
                raise read_error(source, exc) from exc
        if not data:
            return
        if len(data) > self.max_bytes:
            raise ParseError(f"{source.uri}: image larger than {self.max_bytes:,} bytes")
        media_type = (
            image_media_type(data[:1024]) or source.media_type or "application/octet-stream"
        )
        size = _check(source, data) if self.check else None
        metadata: dict[str, object] = {"media_type": media_type, "bytes": len(data)}
        if size is not None:
            metadata["width"], metadata["height"] = size
        yield Section(
            text="",
            source=source.uri,
            image=data,
            metadata=metadata,
        )


def _check(source: Source, data: bytes) -> tuple[int, int]:
    """Decode ``data`` (a JPEG at reduced size) and return its size, or raise ``ParseError``."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # a core dependency, so no extra to name
        raise ParseError("Pillow is not installed: pip install pillow") from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (1024, 1024))  # JPEG decodes at a fraction: enough to find damage
            image.load()
    except Image.DecompressionBombError as exc:
        raise ParseError(f"{source.uri}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ParseError(
            f"{source.uri}: unreadable image (damaged, or a format no decoder here reads)"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ParseError(f"{source.uri}: damaged image: {exc}") from exc
    return int(size[0]), int(size[1])


__all__ = ["ImageSectionParser", "image_media_type"]
