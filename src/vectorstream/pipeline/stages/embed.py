"""Embed: chunks → records, in two halves an executor may run on different threads or machines.

``encode`` tokenises (the ``tokenizers`` batch API, which releases the GIL) and ``embed`` runs the
model and builds the records, so tokenising the next window overlaps inference of this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import ConfigError
from ...types import Chunk, Embedding, EmbeddingKind, Record
from ..ids import record_id
from .messages import Encoded, RecordBatch


class EmbedderLike(Protocol):
    """What the engine needs from a model (``vectorstream.models.Embedder`` provides it)."""

    model_id: str
    fingerprint: str
    dim: int
    max_tokens: int
    num_special_tokens: int
    tokenizer_path: Path

    def tokenize(self, texts: Sequence[str]) -> list[Any]: ...

    def embed_tokenized(self, encodings: Sequence[Any]) -> Any: ...


# Model kinds by the embeddings they make: an image model (CLIP) makes dense vectors of images
# and texts alike.
_EMBEDDING_OF_MODEL: dict[str, EmbeddingKind] = {
    "dense": "dense",
    "sparse": "sparse",
    "multivector": "multivector",
    "image": "dense",
}


def kind_of(embedder: Any) -> EmbeddingKind:
    """The kind of embeddings a model makes (models that do not say make dense vectors)."""
    model_kind = getattr(embedder, "kind", "dense")
    kind = _EMBEDDING_OF_MODEL.get(model_kind)
    if kind is None:
        raise ConfigError(
            f"a {model_kind} model makes no embeddings to store (model {embedder.model_id!r})"
        )
    return kind


class EmbedStage:
    """``late``: late chunking (the embedder has ``late_plan``/``embed_late``): the chunks of each
    source in a window are embedded together, each pooled from the states of its own tokens."""

    def __init__(self, embedder: EmbedderLike, *, late: bool = False) -> None:
        self.embedder = embedder
        self.kind = kind_of(embedder)
        self.late = late
        self._fp = embedder.fingerprint
        self._model_id = embedder.model_id

    def encode(self, chunks: Sequence[Chunk]) -> Encoded:
        nbytes = sum(len(c.text) for c in chunks) * 2 + 64 * len(chunks)
        if self.late:
            plans = [
                self.embedder.late_plan(text, spans)  # type: ignore[attr-defined]
                for text, spans in _by_source(chunks)
            ]
            return Encoded(tuple(chunks), tuple(plans), nbytes)
        images = sum(len(c.image) for c in chunks if c.image is not None)
        texts = [c.text for c in chunks if c.image is None]
        encodings = iter(self.embedder.tokenize(texts) if texts else [])
        # Image chunks have no encoding: their bytes are decoded when the model runs.
        aligned = tuple(None if c.image is not None else next(encodings) for c in chunks)
        return Encoded(tuple(chunks), aligned, nbytes + images)

    def _embed_mixed(self, encoded: Encoded) -> np.ndarray:
        if not callable(getattr(self.embedder, "embed_images", None)):
            raise ConfigError(f"{self._model_id!r} cannot embed images")
        return _mixed_rows(self.embedder, encoded)

    def embed(self, encoded: Encoded) -> RecordBatch:
        if self.late:
            arrays = self.embedder.embed_late(list(encoded.encodings))  # type: ignore[attr-defined]
            out: Any = np.concatenate(arrays) if arrays else np.empty((0, self.embedder.dim))
            tokens = sum(plan.tokens for plan in encoded.encodings)
        elif any(c.image is not None for c in encoded.chunks):
            out = self._embed_mixed(encoded)
            tokens = sum(n_tokens(e) for e in encoded.encodings if e is not None)
        else:
            out = self.embedder.embed_tokenized(list(encoded.encodings))
            tokens = sum(n_tokens(e) for e in encoded.encodings)
        embeddings = _as_embeddings(out, self.kind, len(encoded.chunks))
        fp, model_id = self._fp, self._model_id
        records = tuple(
            Record(
                id=record_id(c.source, c.chunk_index, _content(c), fp),
                embedding=e,
                text=c.text,
                source=c.source,
                chunk_index=c.chunk_index,
                start=c.start,
                end=c.end,
                model=model_id,
                page=c.page,
                headings=c.headings,
                metadata=c.metadata,
                section_index=c.section_index,
            )
            for c, e in zip(encoded.chunks, embeddings, strict=True)
        )
        nbytes = sum(len(r.text) * 2 + r.embedding.nbytes + 200 for r in records)
        return RecordBatch(records, tokens, nbytes)


def _as_embeddings(out: Any, kind: EmbeddingKind, n: int) -> list[Embedding]:
    """A model's batch output as one ``Embedding`` per input.

    Dense models return an ``(n, dim)`` array; other kinds return a list of ``Embedding``s.
    """
    if isinstance(out, np.ndarray) and kind == "dense":
        if out.ndim != 2 or out.shape[0] != n:
            raise ValueError(f"the model returned shape {out.shape} for {n} inputs")
        return [Embedding(dense=row) for row in out]
    items = list(out)
    if len(items) != n or not all(isinstance(e, Embedding) and e.kind == kind for e in items):
        raise ValueError(f"the model must return {n} {kind} embeddings")
    return items


def _content(chunk: Chunk) -> str:
    """What a record id hashes: the text, or for an image chunk a digest of its bytes."""
    if chunk.image is None:
        return chunk.text
    return "\x00image:" + hashlib.blake2b(chunk.image, digest_size=16).hexdigest()


def _mixed_rows(embedder: Any, encoded: Encoded) -> np.ndarray:
    """Image chunks through the image tower, text chunks through the text tower, in order."""
    chunks = encoded.chunks
    image_at = [i for i, c in enumerate(chunks) if c.image is not None]
    text_at = [i for i, c in enumerate(chunks) if c.image is None]
    images = np.asarray(embedder.embed_images([chunks[i].image for i in image_at]))
    out = np.empty((len(chunks), images.shape[1]), dtype=images.dtype)
    out[image_at] = images
    if text_at:
        out[text_at] = np.asarray(
            embedder.embed_tokenized([encoded.encodings[i] for i in text_at]), dtype=images.dtype
        )
    return out


def _by_source(chunks: Sequence[Chunk]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Runs of consecutive chunks of one source as (text, spans): the text covers them all, the
    chunks placed at their document offsets and the gaps between them (whitespace in the
    document) filled with spaces; spans are the chunks' places in it, in chunk order."""
    out: list[tuple[str, list[tuple[int, int]]]] = []
    run: list[Chunk] = []
    for chunk in [*chunks, None]:
        if run and (chunk is None or chunk.source != run[0].source or chunk.start < run[-1].start):
            base = run[0].start
            end = max(c.end for c in run)
            text = [" "] * (end - base)
            for c in run:
                text[c.start - base : c.end - base] = c.text
            out.append(("".join(text), [(c.start - base, c.end - base) for c in run]))
            run = []
        if chunk is not None:
            run.append(chunk)
    return out


def n_tokens(encoding: Any) -> int:
    mask = getattr(encoding, "attention_mask", None)
    if mask is not None:
        return int(sum(mask))
    return len(encoding)


__all__ = ["EmbedStage", "EmbedderLike", "kind_of", "n_tokens"]
