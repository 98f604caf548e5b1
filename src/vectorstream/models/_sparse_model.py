"""The loaded SPLADE model: texts in, one weight per vocabulary term (the non-zero ones) out.

    text ─▶ prompt + tokens (truncated) ─▶ engine: (batch, vocab) term weights ─▶ the non-zero
    terms, sorted by term id (optionally the top k)

The engine is the SPLADE graph on ONNX Runtime (:mod:`._sparse_graph`) or the masked LM on torch
(:mod:`._sparse_torch`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tokenizers

from ..errors import ModelError
from ..types import Embedding, SparseVector
from ._sparse_folder import SparseFolder, json_or_empty
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.sparse")

KIND = "sparse"
# Each forward pass holds (tokens x vocab) logits inside the engine, and ONNX Runtime keeps a few
# working copies of them: the default budget keeps the logits near 2**23 floats (32 MiB) whatever
# the vocabulary, and never below one full window (a 30k vocabulary at 512 tokens: 62 MiB). The
# MLM head's matrix product is as efficient at one window as at several.
_LOGIT_BUDGET = 2**23


class SparseEngine(Protocol):
    """Token ids in, (batch, vocab) term weights out: the SPLADE graph or the torch masked LM."""

    name: str
    threads: int | None

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray: ...


def _tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc
    return tok


def _pad_id(tok: tokenizers.Tokenizer, config: dict[str, Any]) -> int:
    # The id the tokenizer pads with (RoBERTa-style models derive positions from it).
    padding = tok.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    if isinstance(config.get("pad_token_id"), int):
        return int(config["pad_token_id"])
    for name in ("[PAD]", "<pad>"):
        found = tok.token_to_id(name)
        if found is not None:
            return found
    return 0


class SparseEmbedder:
    """A loaded SPLADE model: texts in, one :class:`SparseVector` over the vocabulary per text.

    Safe to call from several threads at once. Build it with :func:`load_sparse` (or
    ``load_model(spec, kind="sparse")``).
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: SparseFolder,
        engine: SparseEngine,
        identity: str,
        quantized: bool = False,
        top_k: int | None = None,
        token_budget: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._engine = engine
        self.backend: str = engine.name
        self.quantized = quantized
        self.top_k = top_k
        self.dim: int = folder.vocab_size
        self.max_tokens: int = folder.max_tokens
        self.query_max_tokens: int = folder.query_max_tokens
        self.token_budget: int = token_budget or max(
            self.max_tokens, self.query_max_tokens, _LOGIT_BUDGET // max(self.dim, 1)
        )
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)};top_k={top_k or 0}"
        )
        self.tokenizer_path: Path = folder.tokenizer_path
        base = _tokenizer(folder.tokenizer_path)
        config = json_or_empty(folder.transformer_path / "config.json")
        self._pad = _pad_id(base, config)
        # tokenizer.json may carry its own truncation and padding; the limits are the model's
        # (sentence-transformers' rules), and batches are padded here.
        base.no_padding()
        base.no_truncation()
        self.tokenizer: tokenizers.Tokenizer = base
        self._documents = self._side(folder.max_tokens)
        self._queries = self._side(folder.query_max_tokens)
        # A document prompt is part of every document's window: chunkers subtract it too.
        prompt_tokens = len(base.encode(folder.document_prompt, add_special_tokens=False).ids)
        self.num_special_tokens: int = base.num_special_tokens_to_add(False) + (
            prompt_tokens if folder.document_prompt else 0
        )
        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log)
        self.embedded_inputs = 0

    def _side(self, limit: int) -> tokenizers.Tokenizer:
        tok = _tokenizer(self.folder.tokenizer_path)
        tok.no_padding()
        tok.enable_truncation(max_length=limit)
        return tok

    def _with_engine(self, engine: SparseEngine) -> SparseEmbedder:
        """This model on another engine (the int8 check compares two graphs)."""
        import copy

        twin = copy.copy(self)
        twin._engine = engine
        twin.backend = engine.name
        twin._lock = threading.Lock()
        twin._truncations = self._truncations.fork()
        return twin

    @property
    def truncated_inputs(self) -> int:
        """Inputs cut to their side's limit since load (all threads)."""
        return self._truncations.total

    @property
    def threads(self) -> int | None:
        return self._engine.threads

    def __repr__(self) -> str:
        return (
            f"SparseEmbedder({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"dim={self.dim}, max_tokens={self.max_tokens}, quantized={self.quantized}, "
            f"top_k={self.top_k})"
        )

    # -- tokenising ---------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Iterable[object]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("pass an iterable of strings, not one string; wrap it in a list")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return items  # type: ignore[return-value]

    def _encode(
        self, tok: tokenizers.Tokenizer, prompt: str, limit: int, texts: Iterable[object]
    ) -> list[tokenizers.Encoding]:
        items = self._check_texts(texts)
        if not items:
            return []
        # As sentence-transformers does: the prompt is prepended to the text, lowercased when the
        # module says so, and the whole is truncated to the limit.
        prepared = [prompt + t for t in items] if prompt else items
        if self.folder.do_lower_case:
            prepared = [t.lower() for t in prepared]
        encodings = tok.encode_batch(prepared)
        self._truncations.record(encodings, limit)
        return encodings

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Document-side encodings: prompt (if the model has one) and special tokens added,
        truncated to ``max_tokens`` (and counted)."""
        return self._encode(self._documents, self.folder.document_prompt, self.max_tokens, texts)

    def tokenize_queries(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Query-side encodings (the query prompt, ``query_max_tokens``)."""
        return self._encode(self._queries, self.folder.query_prompt, self.query_max_tokens, texts)

    # -- embedding ----------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> list[Embedding]:
        """Documents: one sparse embedding per text, in input order."""
        return self.embed_tokenized(self.tokenize(self._check_texts(texts)))

    def embed_queries(self, texts: Iterable[str]) -> list[Embedding]:
        """Queries: symmetric SPLADE runs the same encoder (with the query prompt and limit)."""
        return self._run(self.tokenize_queries(self._check_texts(texts)), self.query_max_tokens)

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        """Run encodings from :meth:`tokenize`; sorting and token-budget batching happen inside."""
        return self._run(encodings, self.max_tokens)

    def _run(self, encodings: Sequence[tokenizers.Encoding], limit: int) -> list[Embedding]:
        from ._embedder import pad_batch, token_budget_batches

        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > limit:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than the limit {limit}; build "
                    "encodings with tokenize(), which truncates"
                )
        out: list[Embedding | None] = [None] * len(encodings)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, types = pad_batch(encodings, batch, self._pad)
            weights = self._engine.run(ids, mask, types)
            if weights.shape != (len(batch), self.dim):
                raise ModelError(
                    f"{self.model_id}: the {self.backend} engine returned shape {weights.shape}, "
                    f"expected ({len(batch)}, {self.dim})"
                )
            if not np.isfinite(weights).all():
                raise ModelError(f"{self.model_id}: the {self.backend} engine returned NaN or inf")
            for row, i in enumerate(batch):
                out[i] = Embedding(sparse=self._sparse(weights[row]))
        with self._lock:
            self.embedded_inputs += len(encodings)
        return [e for e in out if e is not None]

    def _sparse(self, row: np.ndarray) -> SparseVector:
        indices = np.flatnonzero(row > 0)
        if self.top_k is not None and len(indices) > self.top_k:
            keep = np.argpartition(row[indices], len(indices) - self.top_k)[-self.top_k :]
            indices = np.sort(indices[keep])
        return SparseVector(indices, row[indices], self.dim)


__all__ = ["KIND", "SparseEmbedder", "SparseEngine"]
