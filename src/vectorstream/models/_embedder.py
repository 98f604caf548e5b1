"""The Embedder: tokenise, batch by token budget, run a backend, pool, post-process."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ModelError
from ._backends import Backend
from ._folder import ModelFolder
from ._pooling import PRECISIONS, l2_normalize, output_dtype, pool, to_precision
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.embedder")

DEFAULT_TOKEN_BUDGET = 8192  # padded tokens per forward pass: 32 full MiniLM windows
MAX_BATCH = 256  # caps a batch of very short texts (memory of the attention scores)
# On CPU a forward pass costs about the same per padded token whatever the batch size, so small
# batches of similar lengths beat big ones padded to their longest item. The pipeline sorts a
# window of a few hundred chunks at a time, where a looser bound left about a tenth of the compute
# on padding (BENCHMARKS.md, "With a free core").
MIN_FILL = 0.9


def _load_tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc


def token_budget_batches(
    lengths: Sequence[int],
    budget: int,
    max_batch: int = MAX_BATCH,
    min_fill: float = MIN_FILL,
) -> Iterator[list[int]]:
    """Indices sorted longest first, cut into batches that each pad to their first (longest) item.

    A batch ends when one more item would push its padded size (items x longest) over ``budget``,
    or when the next item is shorter than ``min_fill`` x the longest, so padding never exceeds
    ``1 - min_fill`` of a batch. A single input longer than the budget forms a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batch: list[int] = []
    width = 0
    for i in order:
        if batch and (
            (len(batch) + 1) * width > budget
            or len(batch) >= max_batch
            or lengths[i] < min_fill * width
        ):
            yield batch
            batch = []
        if not batch:
            width = max(lengths[i], 1)
        batch.append(i)
    if batch:
        yield batch


def pad_batch(
    encodings: Sequence[tokenizers.Encoding],
    rows: Sequence[int],
    pad_id: int,
    width: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` of ``encodings[rows]``, right-padded
    with ``pad_id`` to ``width`` (default: the longest of them, at least 1). Every model kind
    builds its batches with this."""
    lengths = [len(encodings[i].ids) for i in rows]
    width = width if width is not None else max(max(lengths, default=1), 1)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for row, (i, k) in enumerate(zip(rows, lengths, strict=True)):
        enc = encodings[i]
        ids[row, :k] = enc.ids
        mask[row, :k] = enc.attention_mask
        types[row, :k] = enc.type_ids
    return ids, mask, types


class Embedder:
    """A loaded dense text-embedding model. Safe to call from several threads at once.

    Build it with :func:`vectorstream.models.load_model`.
    """

    def __init__(
        self,
        *,
        model_id: str,
        folder: ModelFolder,
        backend: Backend,
        identity: str,
        quantized: bool = False,
        normalize: bool | None = None,
        dimensions: int | None = None,
        precision: str = "float32",
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        full_dim = folder.dim
        if dimensions is not None and not 0 < dimensions <= full_dim:
            raise ValueError(f"dimensions must be in 1..{full_dim}, got {dimensions}")
        if token_budget < 1:
            raise ValueError(f"token_budget must be positive, got {token_budget}")
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self.backend_impl = backend
        self.backend: str = backend.name
        self.quantized = quantized
        self.normalize: bool = folder.normalize if normalize is None else normalize
        self.full_dim = full_dim
        self.dim: int = dimensions or full_dim
        self.precision = precision
        self.max_tokens: int = folder.max_tokens
        self.token_budget = token_budget
        self.kind = "dense"
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]}"
            f";quantized={int(quantized)};dim={self.dim};normalize={int(self.normalize)}"
            f";precision={precision}"
        )

        self.tokenizer_path: Path = folder.tokenizer_path
        base = _load_tokenizer(folder.tokenizer_path)
        # The packaged tokenizer.json may carry its own truncation (128 for MiniLM) and padding;
        # the model's real limit is sentence-transformers' max_seq_length, and we pad ourselves.
        base.no_padding()
        base.no_truncation()
        self.tokenizer: tokenizers.Tokenizer = base
        self._encoder = _load_tokenizer(folder.tokenizer_path)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens)
        self.num_special_tokens: int = base.num_special_tokens_to_add(False)
        self._strip = self._edges_matter(self._encoder)
        self._pad_id = self._pad_token_id(base)

        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log)
        self.embedded_inputs = 0

    @staticmethod
    def _edges_matter(tok: tokenizers.Tokenizer) -> bool:
        """Whether whitespace around a text changes its tokens (SentencePiece, byte-level BPE).

        sentence-transformers strips every input; we do too only where it changes tokens, so for
        WordPiece models (BERT, MiniLM) encodings keep offsets into the caller's own text.
        """
        for core in ("hello world", "x"):
            plain = tok.encode(core).ids
            for padded in (f" {core}", f"{core} ", f"\n\t{core}  \n"):
                if tok.encode(padded).ids != plain:
                    return True
        return False

    @staticmethod
    def _pad_token_id(tok: tokenizers.Tokenizer) -> int:
        for name in ("[PAD]", "<pad>", "<|endoftext|>"):
            token_id = tok.token_to_id(name)
            if token_id is not None:
                return token_id
        return 0

    def __repr__(self) -> str:
        return (
            f"Embedder({self.model_id!r}, backend={self.backend!r}, dim={self.dim}, "
            f"max_tokens={self.max_tokens}, quantized={self.quantized}, precision={self.precision!r})"
        )

    # -- tokenising -------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Sequence[object]) -> list[str]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return list(texts)  # type: ignore[arg-type]

    def _prepare(self, text: str) -> str:
        # As sentence-transformers does: strip (where it matters) and lowercase when configured.
        if self._strip:
            text = text.strip()
        return text.lower() if self.folder.do_lower_case else text

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Encode for the model: special tokens added, truncated to ``max_tokens`` and counted.

        For tokenizers where surrounding whitespace changes the tokens (SentencePiece, byte-level
        BPE) texts are stripped first, as sentence-transformers does, and offsets then refer to
        ``text.strip()``; for WordPiece models (MiniLM, BERT) offsets refer to the text given.
        """
        items = self._check_texts(texts)
        if not items:
            return []
        encodings = self._encoder.encode_batch([self._prepare(t) for t in items])
        self._truncations.record(encodings, self.max_tokens)
        return encodings

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens and without truncation."""
        items = self._check_texts(texts)
        if not items:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(items, add_special_tokens=False)]

    # -- embedding --------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Vectors for ``texts`` in input order: shape (n, dim) (binary: (n, ceil(dim/8)))."""
        if isinstance(texts, str):
            raise TypeError(
                "embed() takes an iterable of strings, not one string; wrap it in a list"
            )
        return self.embed_tokenized(self.tokenize(list(texts)))

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Run encodings from :meth:`tokenize`; sorting and token-budget batching happen inside."""
        n = len(encodings)
        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than max_tokens={self.max_tokens}; "
                    "build encodings with embedder.tokenize(), which truncates"
                )
        pooled = np.empty((n, self.full_dim), dtype=np.float32)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, types = pad_batch(encodings, batch, self._pad_id)
            states = self.backend_impl.run(ids, mask, types)
            pooled[batch] = pool(states, mask, self.folder.pooling)
        with self._lock:
            self.embedded_inputs += n
        return self._postprocess(pooled)

    def late_plan(self, text: str, spans: Sequence[tuple[int, int]]) -> Any:
        """Late chunking, tokenising half: see :mod:`vectorstream.models._late`."""
        from ._late import late_plan

        return late_plan(self, text, spans)

    def embed_late(self, plans: Sequence[Any]) -> list[np.ndarray]:
        """Late chunking, inference half: one ``(n_spans, dim)`` array per plan."""
        from ._late import embed_late

        vectors = embed_late(self, plans)
        with self._lock:
            self.embedded_inputs += sum(len(v) for v in vectors)
        return vectors

    def with_threads(self, threads: int) -> Embedder:
        """This model on an inference session with ``threads`` threads (tokenizers shared).

        The copy gives identical vectors; only the engine's thread count differs. For the ONNX
        backend it is a second session (its own copy of the weights); the torch backend has one
        process-wide thread count, so the copy shares it.
        """
        backend = self.backend_impl
        make = getattr(backend, "with_threads", None)
        sibling = make(threads) if callable(make) else backend
        if sibling is backend:
            return self
        twin = copy.copy(self)
        twin.backend_impl = sibling
        twin._truncations = self._truncations.fork()
        return twin

    @property
    def truncated_inputs(self) -> int:
        """Texts cut to ``max_tokens`` since load (all threads)."""
        return self._truncations.total

    @property
    def threads(self) -> int | None:
        """Intra-op threads of the inference engine, when it has its own count."""
        value = getattr(self.backend_impl, "threads", None)
        return int(value) if isinstance(value, int) else None

    def _postprocess(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.shape[0] == 0:
            width = self.dim if self.precision != "binary" else (self.dim + 7) // 8
            return np.empty((0, width), dtype=output_dtype(self.precision))
        if self.dim < self.full_dim:
            # Matryoshka: keep the leading dimensions, then renormalise (below) when normalising.
            vectors = vectors[:, : self.dim]
        if self.normalize:
            vectors = l2_normalize(vectors)
        return to_precision(vectors, self.precision)


__all__ = ["DEFAULT_TOKEN_BUDGET", "Embedder", "pad_batch", "token_budget_batches"]
