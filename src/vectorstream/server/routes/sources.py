"""``GET /v1/sources/thumbnail?source=...``: a small JPEG of an image the store holds.

The page shows image hits with it. The service reads a file of its own disk here, so the file is
read only when all of these hold, and every refusal is the same 404 (the answer never tells
whether some other file exists):

- ``source`` is an absolute path (uploads are stored under their base name, never resolved);
- the collection's manifest records that source as ingested (``state: done``);
- the file is a regular file of at most ``THUMBNAIL_MAX_BYTES`` bytes whose content hash is the one
  the manifest recorded: its bytes are exactly those that were ingested. A record made from a text
  whose id names some path on this disk (``POST /v1/ingest`` keeps ids) carries the hash of that
  text, not of the file, so it never opens the file to a client;
- the bytes decode as a PNG, JPEG, WebP or GIF image of at most ``max_image_pixels`` pixels.

What is sent is a re-encoded thumbnail (at most ``THUMBNAIL_SIDE`` pixels a side), never the file.
"""

from __future__ import annotations

import logging
import os
import stat

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...types import Source
from .._images import THUMBNAIL_MAX_BYTES, thumbnail
from ..errors import APIError
from ..state import ServiceState
from ._common import service

log = logging.getLogger("vectorstream.server.sources")

router = APIRouter()


def _not_found(source: str) -> APIError:
    return APIError(
        404,
        f"no image thumbnail for {source!r} in this collection",
        param="source",
        code="thumbnail_not_found",
    )


def _read_regular(path: str, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes; ``None`` for anything else."""
    try:
        # Non-blocking: opening a FIFO put where a file was must not hang a worker thread.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = fh.read(limit + 1)
    return data if len(data) <= limit else None


def _thumbnail(state: ServiceState, source: str, collection: str | None) -> bytes:
    # In a worker thread: the store and the disk may block.
    from ...pipeline.manifest import Manifest
    from ...sources import fingerprint

    if not os.path.isabs(source):
        raise _not_found(source)
    store = state.store(collection)
    try:
        entry = Manifest.of(store).get(source)
    except Exception:  # a store without a manifest (a file sink) has no sources to show
        log.debug("no manifest to look %r up in", source, exc_info=True)
        entry = None
    if entry is None:
        raise _not_found(source)
    data = _read_regular(source, THUMBNAIL_MAX_BYTES)
    if data is None or fingerprint(Source(uri=source, data=data)) != entry.content_hash:
        raise _not_found(source)
    try:
        return thumbnail(data, state.settings.max_image_pixels)
    except ValueError as exc:
        log.debug("no thumbnail for %s: %s", source, exc)
        raise _not_found(source) from exc


@router.get("/v1/sources/thumbnail")
async def source_thumbnail(
    request: Request,
    source: str = Query(min_length=1, description="The hit's source (an absolute path)"),
    collection: str | None = Query(default=None),
) -> Response:
    state = service(request)
    data = await anyio.to_thread.run_sync(_thumbnail, state, source, collection)
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
