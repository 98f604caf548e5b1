"""Embeddings of the non-dense kinds: sparse and multivector models, and images for image models.

Dense vectors go through the micro-batcher (``routes/embeddings.py`` and ``fastpath.py``), which is
tuned for them and measured. The other kinds take a simpler path, so the dense one stays as it
is: a request's inputs run in one worker thread, holding one of the service's inference slots
(``ServiceState.kind_slots``, one per lane), so concurrent requests never oversubscribe the cores.
An image model's texts still go through the batcher (its text tower gives dense vectors); only
its images come here.

Answers extend OpenAI's shape: a sparse item's ``embedding`` is ``{"indices", "values", "dim"}``;
a multivector item's is a list of token vectors, or with ``encoding_format: "base64"`` one base64
string of little-endian float32 rows plus ``"shape": [n, dim]``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np

from ...errors import ModelError, ParseError, VectorstreamError
from ...types import Embedding
from .._images import ImageInput, decode_image_uri, is_image_uri, pixel_groups, undecodable
from ..errors import APIError
from ..schemas import EmbeddingsRequest
from ..state import ServiceState
from ._common import dense_data, real_tokens, resize, tokenize_checked

log = logging.getLogger("vectorstream.server.kinds")


async def in_worker(state: ServiceState, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, holding one inference slot.

    A model's own failure is a ``ModelError`` (500 ``model_error``), as in the batcher; refusals
    (``APIError``) and library errors keep their meaning.
    """
    async with state.kind_slots:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except (APIError, VectorstreamError):
            raise
        except Exception as exc:
            log.exception("the model failed")
            raise ModelError(f"the model failed: {exc}") from exc


def checked_embeddings(out: Any, n: int, kind: str, model_id: str) -> list[Embedding]:
    """The model's answer, if it is ``n`` embeddings of ``kind``; else a ``ModelError``."""
    items = list(out)
    if len(items) != n:
        raise ModelError(f"{model_id} returned {len(items)} embeddings for {n} inputs")
    for item in items:
        if not isinstance(item, Embedding) or item.kind != kind:
            got = item.kind if isinstance(item, Embedding) else type(item).__name__
            raise ModelError(f"{model_id} returned a {got} embedding; it is a {kind} model")
    return items


def _embed_queries(model: Any, texts: list[str]) -> tuple[Any, int]:
    """Query-side embeddings, and the tokens of the queries (special tokens in, padding and
    query expansion out)."""
    tokenize = getattr(model, "tokenize_queries", None) or model.tokenize
    tokens = real_tokens(tokenize(texts))
    embed = getattr(model, "embed_queries", None) or model.embed
    return embed(texts), tokens


def _item(index: int, embedding: Embedding, encoding_format: str) -> dict[str, Any]:
    if embedding.sparse is not None:
        sparse = embedding.sparse
        value: Any = {"indices": sparse.indices, "values": sparse.values, "dim": sparse.dim}
        return {"object": "embedding", "index": index, "embedding": value}
    rows = np.ascontiguousarray(embedding.multivector, dtype="<f4")
    if encoding_format == "base64":
        return {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(rows.tobytes()).decode(),
            "shape": list(rows.shape),
        }
    return {"object": "embedding", "index": index, "embedding": rows}


async def kind_payload(
    state: ServiceState, body: EmbeddingsRequest, texts: list[str]
) -> dict[str, Any]:
    """The answer to an embeddings request for a non-dense model (inputs already checked)."""
    if state.kind == "image":
        return await _image_payload(state, body, texts)
    kind, model = state.kind, state.model
    if body.dimensions is not None:
        raise APIError(
            400,
            f"dimensions applies to dense embeddings; {model.model_id!r} makes {kind} ones",
            param="dimensions",
        )
    if kind == "sparse" and body.encoding_format == "base64":
        raise APIError(
            400,
            'a sparse embedding is {"indices", "values", "dim"}; send "encoding_format": "float"',
            param="encoding_format",
        )
    if body.input_type == "query":
        # Queries are cut to the model's query length, as its reference library does (ColBERT's
        # is part of the model), and as a search query is.
        out, tokens = await in_worker(state, _embed_queries, model, texts)
    else:
        truncate = state.settings.truncate if body.truncate is None else body.truncate
        encodings = await tokenize_checked(state, texts, truncate=truncate)
        out = await in_worker(state, model.embed_tokenized, encodings)
        tokens = real_tokens(encodings)
    embeddings = checked_embeddings(out, len(texts), kind, model.model_id)
    state.metrics.tokens.inc(tokens)
    return {
        "object": "list",
        "data": [_item(i, e, body.encoding_format) for i, e in enumerate(embeddings)],
        "model": model.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _decode_images(texts: Sequence[str], positions: Sequence[int], limit: int) -> list[ImageInput]:
    return [decode_image_uri(texts[i], i, limit) for i in positions]


def _embed_images(model: Any, images: Sequence[ImageInput], budget: int) -> np.ndarray:
    """Image vectors, decoded a pixel budget at a time; a bad image is a 400 naming its input."""
    parts: list[np.ndarray] = []
    for group in pixel_groups(images, budget):
        chosen = [images[i] for i in group]
        try:
            parts.append(np.asarray(model.embed_images([im.data for im in chosen]), np.float32))
        except ParseError as exc:
            bad = undecodable(chosen)
            if bad is not None:
                image, reason = bad
                message = f"input[{image.position}] cannot be decoded as an image: {reason}"
            else:  # every image decodes; the model refused one later (orientation, colour mode)
                where = ", ".join(f"input[{im.position}]" for im in chosen)
                message = f"one of {where} cannot be read as an image: {exc}"
            raise APIError(400, message, param="input", code="invalid_image") from exc
    return np.concatenate(parts) if parts else np.zeros((0, model.dim), np.float32)


async def _image_payload(
    state: ServiceState, body: EmbeddingsRequest, texts: list[str]
) -> dict[str, Any]:
    """Texts through the text tower (the batcher), images through the image tower; one space."""
    model = state.model
    image_at = [i for i, text in enumerate(texts) if is_image_uri(text)]
    text_at = [i for i, text in enumerate(texts) if not is_image_uri(text)]
    limit = state.settings.max_image_pixels
    # Everything is checked (image headers, token limits) before any inference starts.
    images = await anyio.to_thread.run_sync(_decode_images, texts, image_at, limit)
    encodings: list[Any] = []
    if text_at:
        truncate = state.settings.truncate if body.truncate is None else body.truncate
        encodings = await tokenize_checked(
            state, [texts[i] for i in text_at], truncate=truncate, positions=text_at
        )
    image_vectors = await in_worker(state, _embed_images, model, images, limit)
    if image_vectors.shape != (len(images), model.dim):
        raise ModelError(
            f"{model.model_id} returned image vectors of shape {image_vectors.shape} for "
            f"{len(images)} images; expected ({len(images)}, {model.dim})"
        )
    vectors = np.empty((len(texts), model.dim), dtype=np.float32)
    vectors[image_at] = image_vectors
    if encodings:
        vectors[text_at] = np.asarray(await state.batcher.run(encodings), dtype=np.float32)
    vectors = resize(vectors, body.dimensions, model.dim)
    tokens = real_tokens(encodings)  # images count no tokens
    return {
        "object": "list",
        "data": dense_data(vectors, body.encoding_format),
        "model": model.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def query_embedding(state: ServiceState, query: str) -> Embedding:
    """A search query embedded by a sparse or multivector model (its query side)."""
    model = state.model
    out, tokens = await in_worker(state, _embed_queries, model, [query])
    state.metrics.tokens.inc(tokens)
    return checked_embeddings(out, 1, state.kind, model.model_id)[0]


__all__ = ["checked_embeddings", "in_worker", "kind_payload", "query_embedding"]
