"""The loaded CLIP model: images and texts embedded into one vector space.

Images are decoded and preprocessed by :mod:`._images` (the processor's own numerics) in bounded
batches, so memory depends on the batch size, never on the number of images. Texts are tokenised,
truncated to the text tower's positions (77 for CLIP) and batched by token budget like the dense
:class:`~vectorstream.models.Embedder`, whose pipeline protocol (``tokenize`` /
``embed_tokenized`` returning dense arrays) the text side follows, so text chunks go through the
pipeline and search queries embed into the images' space.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tokenizers

from ..errors import ParseError
from ._clip_folder import ClipFolder
from ._clip_onnx import OnnxTowers
from ._clip_torch import TorchTowers
from ._embedder import DEFAULT_TOKEN_BUDGET, _load_tokenizer, pad_batch, token_budget_batches
from ._images import ImageInput, load_pixels
from ._pooling import l2_normalize
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.image")

DEFAULT_IMAGE_BATCH = 16  # images decoded and run together: bounds memory, not throughput


class ClipModel:
    """A loaded CLIP model: ``embed_images`` and ``embed`` (texts) into one space.

    Safe to call from several threads at once. Build it with ``load_model(spec, kind="image")``.
    """

    kind = "image"

    def __init__(
        self,
        *,
        model_id: str,
        folder: ClipFolder,
        towers: OnnxTowers | TorchTowers,
        identity: str,
        quantized: bool = False,
        normalize: bool = True,
        batch_size: int = DEFAULT_IMAGE_BATCH,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self.towers = towers
        self.backend: str = towers.name
        self.quantized = quantized
        self.normalize = normalize
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.dim: int = folder.dim
        self.max_tokens: int = folder.max_tokens
        self.image_size: tuple[int, int] = (folder.image_size, folder.image_size)
        self.image_settings = folder.image_settings
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind=image;quantized={int(quantized)};dim={self.dim}"
            f";normalize={int(normalize)}"
        )
        self.tokenizer_path: Path = folder.tokenizer_path
        base = _load_tokenizer(folder.tokenizer_path)
        base.no_padding()
        base.no_truncation()
        self.tokenizer: tokenizers.Tokenizer = base
        self._encoder = _load_tokenizer(folder.tokenizer_path)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens)
        self.num_special_tokens: int = base.num_special_tokens_to_add(False)
        pad_id = base.token_to_id(folder.pad_token) if folder.pad_token else None
        # CLIP pools the first end-of-text token and attends causally, so padding after it
        # never changes a vector; its id only has to be a valid token.
        self._pad_id: int = pad_id if pad_id is not None else 0
        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log, "texts")
        self.embedded_inputs = 0
        self.embedded_images = 0

    @property
    def truncated_inputs(self) -> int:
        """Texts cut to ``max_tokens`` since load (all threads)."""
        return self._truncations.total

    @property
    def threads(self) -> int | None:
        return self.towers.threads

    def __repr__(self) -> str:
        return (
            f"ClipModel({self.model_id!r}, kind='image', backend={self.backend!r}, dim={self.dim}, "
            f"image_size={self.image_size[0]}x{self.image_size[1]}, max_tokens={self.max_tokens}, "
            f"quantized={self.quantized})"
        )

    # -- texts ----------------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Sequence[object]) -> list[str]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return list(texts)  # type: ignore[arg-type]

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Encode for the text tower: special tokens added, truncated to ``max_tokens``."""
        items = self._check_texts(texts)
        if not items:
            return []
        encodings = self._encoder.encode_batch(items)
        self._truncations.record(encodings, self.max_tokens)
        return encodings

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens and without truncation."""
        items = self._check_texts(texts)
        if not items:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(items, add_special_tokens=False)]

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Text vectors for encodings from :meth:`tokenize`: (n, dim), input order."""
        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than max_tokens={self.max_tokens}; "
                    "build encodings with tokenize(), which truncates"
                )
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, _ = pad_batch(encodings, batch, self._pad_id)
            out[batch] = self.towers.texts(ids, mask)
        with self._lock:
            self.embedded_inputs += len(encodings)
        return self._finish(out)

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Text vectors (the text tower): (n, dim), in the images' space, input order."""
        if isinstance(texts, str):
            raise TypeError(
                "embed() takes an iterable of strings, not one string; wrap it in a list"
            )
        return self.embed_tokenized(self.tokenize(list(texts)))

    def embed_queries(self, texts: Iterable[str]) -> np.ndarray:
        """Search queries: the same text tower (CLIP has no query markers)."""
        return self.embed(texts)

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Decode and preprocess: float32 (n, 3, H, W). A bad image raises ``ParseError`` with its
        position. Runs without the model, so it may happen in another thread or process."""
        return self._pixels(images, 0)

    def _pixels(self, images: Sequence[ImageInput], offset: int) -> np.ndarray:
        height, width = self.image_size
        out = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, source in enumerate(images):
            try:
                out[i] = load_pixels(source, self.image_settings)
            except ParseError as exc:
                raise ParseError(f"image {offset + i}: {exc}") from exc
        return out

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """Image vectors for :meth:`preprocess` output: (n, dim), in bounded batches."""
        expected = (3, *self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (n, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {pixel_values.shape}"
            )
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            out[start : start + self.batch_size] = self.towers.images(
                pixels[start : start + self.batch_size]
            )
        with self._lock:
            self.embedded_images += len(pixels)
        return self._finish(out)

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Image vectors for paths, encoded bytes or PIL images: (n, dim), input order.

        Images are decoded ``batch_size`` at a time, so memory stays bounded however many are
        given. A bad image raises ``ParseError`` naming its position and source.
        """
        if isinstance(images, str | bytes | bytearray | os.PathLike):
            raise TypeError("embed_images() takes a sequence of images, not one; wrap it in a list")
        items = list(images)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            pixels = self._pixels(chunk, start)
            out[start : start + len(chunk)] = self.towers.images(pixels)
        with self._lock:
            self.embedded_images += len(items)
        return self._finish(out)

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if self.normalize and len(vectors) else vectors


__all__ = ["DEFAULT_IMAGE_BATCH", "ClipModel"]
