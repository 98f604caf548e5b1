"""The loaded ColBERT model: texts in, one L2-normalised vector per kept token out.

    text ─▶ marker + tokens (+ [MASK] expansion for queries) ─▶ runner (transformer, Dense, norm)
         ─▶ keep real tokens (queries: + expansion; documents: − skiplist) ─▶ (n_tokens, dim)

The runner is the ONNX graph (:mod:`._colbert_onnx`) or the torch head (:mod:`._colbert_torch`);
masking is a boolean selection on the way out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError
from ..types import Embedding
from ._colbert_folder import ColbertFolder
from ._colbert_tokens import (
    Side,
    edges_matter,
    load_tokenizer_json,
    make_side,
    named_token,
    tokenizer_from,
)
from ._embedder import DEFAULT_TOKEN_BUDGET, pad_batch, token_budget_batches
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.multivector")

KIND = "multivector"
PRECISIONS: tuple[str, ...] = ("float32", "float16")


class ColbertEmbedder:
    """A loaded late-interaction model: ``embed`` (documents) and ``embed_queries`` return one
    ``Embedding(multivector=(n_tokens, dim))`` per text. Safe to call from several threads.

    Build it with ``load_model(spec, kind="multivector")`` or :func:`load_multivector`.
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: ColbertFolder,
        runner: Any,
        identity: str,
        quantized: bool = False,
        precision: str = "float32",
        query_length: int | None = None,
        document_length: int | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if token_budget < 1:
            raise ConfigError(f"token_budget must be positive, got {token_budget}")
        for name, value in (("query_length", query_length), ("document_length", document_length)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}")
        if query_length is not None:
            expansion = folder.expansion
            if expansion is not None and expansion.strategy == "fixed":
                expansion = replace(expansion, length=query_length)
            elif expansion is not None:
                # "min": the override is the ceiling, and the floor stays under it.
                expansion = replace(expansion, length=min(expansion.length, query_length))
            folder = replace(folder, query_length=query_length, expansion=expansion)
        if document_length is not None:
            folder = replace(folder, document_length=document_length)
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._runner = runner
        self.backend: str = runner.name
        self.quantized = quantized
        self.precision = precision
        self.token_budget = token_budget
        self.dim: int = folder.dim
        self.max_tokens: int = folder.document_length or folder.model_max_tokens

        self.tokenizer_path: Path = folder.tokenizer_path
        data = load_tokenizer_json(folder.tokenizer_path)
        self.tokenizer: tokenizers.Tokenizer = tokenizer_from(data, folder.tokenizer_path)
        strip = folder.strips and edges_matter(self.tokenizer)
        self._document = make_side(
            folder, data, query=False, strip=strip, max_length=self.max_tokens
        )
        self._query = make_side(
            folder,
            data,
            query=True,
            strip=strip,
            max_length=folder.query_length or folder.model_max_tokens,
        )
        self.query_max_tokens: int = self._query.max_length
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)}"
            f";precision={precision};query_tokens={self.query_max_tokens}"
            f";document_tokens={self.max_tokens}"
        )
        # Tokens a document gets besides its own: special tokens, the marker and a text prompt.
        empty = self._document.tokenizer.encode(self._document.prepare(""))
        self.num_special_tokens: int = len(empty.ids)
        self._pad_id = self._pad_token_id()

        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log, "documents")
        self.embedded_inputs = 0

    def _pad_token_id(self) -> int:
        for token in (named_token(self.folder.transformer_path, "pad_token"), "[PAD]", "<pad>"):
            if token is not None and (found := self.tokenizer.token_to_id(token)) is not None:
                return int(found)
        return 0

    def __repr__(self) -> str:
        return (
            f"ColbertEmbedder({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"dim={self.dim}, max_tokens={self.max_tokens}, query_tokens={self.query_max_tokens}, "
            f"quantized={self.quantized}, precision={self.precision!r})"
        )

    @property
    def truncated_inputs(self) -> int:
        """Documents cut to ``max_tokens`` since load (all threads)."""
        return self._truncations.total

    @property
    def threads(self) -> int | None:
        value = getattr(self._runner, "threads", None)
        return int(value) if isinstance(value, int) else None

    @property
    def graph_path(self) -> Path | None:
        """The ONNX graph this model runs (None on the torch backend)."""
        path = getattr(self._runner, "path", None)
        return path if isinstance(path, Path) else None

    # -- tokenising -------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Iterable[object]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("pass an iterable of strings, not one string; wrap it in a list")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return items  # type: ignore[return-value]

    def _encode(self, side: Side, texts: Iterable[object]) -> list[tokenizers.Encoding]:
        items = self._check_texts(texts)
        if not items:
            return []
        return side.tokenizer.encode_batch([side.prepare(t) for t in items])

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Encode documents for the model: marker and special tokens added, truncated to
        ``max_tokens``. Offsets refer to the text after any text prompt (sentence-transformers
        layouts prepend the document prompt as text)."""
        encodings = self._encode(self._document, texts)
        self._truncations.record(encodings, self.max_tokens)
        return encodings

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens and without truncation."""
        items = self._check_texts(texts)
        if not items:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(items, add_special_tokens=False)]

    # -- embedding --------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> list[Embedding]:
        """Document vectors, one ``Embedding(multivector=(n_tokens, dim))`` per text, input order."""
        return self.embed_tokenized(self.tokenize(self._check_texts(texts)))

    def embed_queries(self, texts: Iterable[str]) -> list[Embedding]:
        """Query vectors: query marker, [MASK] expansion and query length as the model says."""
        return self._run(self._query, self._encode(self._query, texts))

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        """Document vectors for encodings from :meth:`tokenize` (batched by token budget inside)."""
        for i, enc in enumerate(encodings):
            if len(enc.ids) > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {len(enc.ids)} tokens, more than max_tokens="
                    f"{self.max_tokens}; build encodings with model.tokenize(), which truncates"
                )
        return self._run(self._document, encodings)

    def _run(self, side: Side, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        n = len(encodings)
        lengths = [len(e.ids) for e in encodings]
        floor = side.floor
        widths = [max(k, floor, 1) for k in lengths]
        out: list[Embedding | None] = [None] * n
        dtype = np.float16 if self.precision == "float16" else np.float32
        for batch in token_budget_batches(widths, self.token_budget):
            width = widths[batch[0]]
            ids, mask, types = pad_batch(encodings, batch, self._pad_id, width)
            keep = mask.astype(bool)
            if side.expansion is not None:
                # Pads below the floor become the expansion token, scored (normally) whether
                # or not the encoder attends to them.
                expand = ~keep & (np.arange(width) < floor)[None, :]
                assert side.expansion_id is not None
                ids[expand] = side.expansion_id
                if side.expansion.attend:
                    mask[expand] = 1
                if side.scores_expansion:
                    keep |= expand
            if side.skip_ids is not None:
                keep &= ~np.isin(ids, side.skip_ids)
            if side.keep_only_ids is not None:
                keep &= np.isin(ids, side.keep_only_ids)
            vectors = self._runner.run(ids, mask, types)
            for row, i in enumerate(batch):
                out[i] = Embedding(
                    multivector=np.ascontiguousarray(vectors[row][keep[row]], dtype=dtype)
                )
        with self._lock:
            self.embedded_inputs += n
        return [e for e in out if e is not None]


__all__ = ["KIND", "PRECISIONS", "ColbertEmbedder"]
