"""The loaded cross-encoder: (query, text) pairs in, scores out, as ``CrossEncoder.predict``.

- pairs are tokenised together (``[CLS] query [SEP] text [SEP]`` for BERT), cut to the model's
  max length with the "longest_first" strategy (tokens come off the longer side first), never
  stripped;
- the activation applied to the logits is the caller's, else the folder's (:mod:`._rerank_folder`);
- a multi-label model's ``score`` returns every activated column, shape ``(n, num_labels)``, as
  ``predict`` does; ``rerank`` needs one score per pair and refuses such a model, as ``rank`` does.

The engine (token ids in, logits out) is the ONNX graph (:mod:`._rerank_onnx`) or the torch model
(:mod:`._rerank_torch`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError, ModelError
from ._embedder import pad_batch, token_budget_batches
from ._rerank_folder import RerankFolder, json_or_none
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.rerank")

KIND = "rerank"
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "identity")  # what a caller may ask for
DEFAULT_TOKEN_BUDGET = 8192


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One text's place in a ranking: its index in the input, its score and the text itself."""

    index: int
    score: float
    text: str


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Two branches so neither overflows in exp for large |x|.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    # torch.nn.Softmax() without dim picks dim 1 for a (batch, labels) matrix.
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


APPLY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "identity": lambda x: x,
    "tanh": np.tanh,
    "softmax": _softmax,
}


def _load_tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc


def _lowercased(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    # sentence-transformers' do_lower_case puts a Lowercase normaliser in front of the tokenizer's.
    from tokenizers import normalizers

    steps: list[Any] = [normalizers.Lowercase()]
    if tok.normalizer is not None:
        steps.append(tok.normalizer)
    tok.normalizer = normalizers.Sequence(steps)
    return tok


def _pad_id(tok: tokenizers.Tokenizer, config_file: Path) -> int:
    padding = tok.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    config = json_or_none(config_file)
    if isinstance(config, dict) and isinstance(config.get("pad_token_id"), int):
        return int(config["pad_token_id"])
    for name in ("[PAD]", "<pad>"):
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    return 0


class Reranker:
    """A loaded cross-encoder. Safe to call from several threads at once.

    Build it with :func:`load_rerank` (or ``load_model(spec, kind="rerank")``).
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: RerankFolder,
        engine: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        backend: str,
        identity: str,
        quantized: bool = False,
        threads: int | None = None,
        activation: str | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if activation is not None and activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {ACTIVATIONS} or None, got {activation!r}"
            )
        if token_budget < 1:
            raise ConfigError(f"token_budget must be positive, got {token_budget}")
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._engine = engine
        self.backend = backend
        self.quantized = quantized
        self.threads = threads
        self.activation: str = activation or folder.activation
        self.num_labels = folder.num_labels
        self.dim = folder.num_labels  # the width of one pair's scores
        self.max_tokens = folder.max_tokens
        self.token_budget = token_budget
        self.fingerprint = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)}"
            f";activation={self.activation};max_tokens={self.max_tokens}"
        )
        self.tokenizer_path = folder.tokenizer_path
        base = _load_tokenizer(folder.tokenizer_path)
        base.no_padding()
        base.no_truncation()
        if folder.do_lower_case:
            _lowercased(base)
        self.tokenizer: tokenizers.Tokenizer = base
        self._encoder = _load_tokenizer(folder.tokenizer_path)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens, strategy="longest_first")
        if folder.do_lower_case:
            _lowercased(self._encoder)
        # A document is the second sequence of a pair, so it shares the pair's special tokens.
        self.num_special_tokens: int = base.num_special_tokens_to_add(True)
        self._pad = _pad_id(base, folder.transformer_path / "config.json")
        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log, "pairs", level=logging.INFO)
        self.scored_pairs = 0

    @property
    def truncated_pairs(self) -> int:
        """Pairs cut to ``max_tokens`` since load (all threads)."""
        return self._truncations.total

    def __repr__(self) -> str:
        return (
            f"Reranker({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"labels={self.num_labels}, max_tokens={self.max_tokens}, "
            f"activation={self.activation!r}, quantized={self.quantized})"
        )

    # -- tokenising -------------------------------------------------------------------------

    @staticmethod
    def _check_pairs(pairs: Sequence[Any]) -> list[tuple[str, str]]:
        if isinstance(pairs, str | tuple) and len(pairs) == 2 and isinstance(pairs[0], str):
            raise TypeError("score() takes a sequence of (query, text) pairs; wrap one in a list")
        out: list[tuple[str, str]] = []
        for i, pair in enumerate(pairs):
            if (
                not isinstance(pair, tuple | list)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise TypeError(f"pair {i} is not a (str, str) pair: {type(pair).__name__}")
            out.append((pair[0], pair[1]))
        return out

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tokenizers.Encoding]:
        """Encodings of (query, text) pairs, cut to ``max_tokens`` longest-side first (and counted)."""
        items = self._check_pairs(pairs)
        if not items:
            return []
        prompt = self.folder.prompt
        encodings = self._encoder.encode_batch([(prompt + q, t) for q, t in items])
        self._truncations.record(encodings, self.max_tokens)
        return list(encodings)

    # -- scoring ----------------------------------------------------------------------------

    def logits_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Raw logits, shape ``(n, num_labels)``, input order; batched by token budget inside."""
        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than max_tokens={self.max_tokens}; "
                    "build encodings with tokenize_pairs(), which truncates"
                )
        out = np.empty((len(encodings), self.num_labels), dtype=np.float32)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, types = pad_batch(encodings, batch, self._pad)
            logits = self._engine(ids, mask, types)
            if logits.shape != (len(batch), self.num_labels):
                raise ModelError(
                    f"the model returned logits of shape {logits.shape}, expected "
                    f"({len(batch)}, {self.num_labels})"
                )
            out[batch] = logits
        with self._lock:
            self.scored_pairs += len(encodings)
        return out

    def score_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Scores of encodings from :meth:`tokenize_pairs`, as :meth:`score` returns them."""
        scores = APPLY[self.activation](self.logits_tokenized(encodings))
        return scores[:, 0] if self.num_labels == 1 else scores

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores of (query, text) pairs in input order, as ``CrossEncoder.predict`` gives them.

        Shape ``(n,)`` for a single-label model, ``(n, num_labels)`` otherwise; float32.
        """
        return self.score_tokenized(self.tokenize_pairs(pairs))

    def rerank(
        self, query: str, texts: Sequence[str], *, top_n: int | None = None
    ) -> list[RerankResult]:
        """``texts`` ranked by relevance to ``query``, best first (ties keep input order)."""
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__}, not str")
        if isinstance(texts, str):
            raise TypeError("rerank() takes a sequence of texts, not one string; wrap it in a list")
        if top_n is not None and top_n < 1:
            raise ConfigError(f"top_n must be at least 1, got {top_n}")
        if self.num_labels != 1:
            raise ModelError(
                f"{self.model_id} has {self.num_labels} labels; ranking needs one score per pair "
                "(as CrossEncoder.rank does): use score() for its per-label scores"
            )
        items = list(texts)
        scores = self.score([(query, t) for t in items]) if items else np.empty(0, np.float32)
        order = sorted(range(len(items)), key=lambda i: -float(scores[i]))
        if top_n is not None:
            order = order[:top_n]
        return [RerankResult(i, float(scores[i]), items[i]) for i in order]


__all__ = ["ACTIVATIONS", "DEFAULT_TOKEN_BUDGET", "KIND", "RerankResult", "Reranker"]
