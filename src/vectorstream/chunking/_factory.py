"""Building a chunker from options, a tokenizer and the model's token limit."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import tokenizers

from ..errors import ChunkingError
from ._chunker import (
    Chunker,
    Embed,
    MarkdownChunker,
    SemanticChunker,
    SentenceChunker,
    TokenChunker,
    _BaseChunker,
)
from ._options import ChunkOptions
from ._tokens import private_copy

_CLASSES: dict[str, type[_BaseChunker]] = {
    "tokens": TokenChunker,
    "sentences": SentenceChunker,
    "markdown": MarkdownChunker,
    "semantic": SemanticChunker,
}


@runtime_checkable
class ChunkerFactory(Protocol):
    """Builds the chunker a pipeline uses: :func:`make_chunker` is the built-in one.

    A pipeline calls it once per source, in the process that chunks it (a worker process, so the
    factory must pickle: a module-level function, or an instance of a module-level class):

        factory(options, tokenizer, max_tokens, num_special_tokens=N, embed=None) -> Chunker

    ``options`` are the pipeline's :class:`ChunkOptions`; ``tokenizer`` is the model's, with
    truncation and padding off; ``max_tokens`` and ``num_special_tokens`` are the model's limits,
    which every chunk's ``n_tokens`` must respect (see :func:`effective_limit`); ``embed`` is
    ``None`` (the pipeline loads a model for the built-in ``semantic`` splitter only).
    """

    def __call__(
        self,
        options: ChunkOptions,
        tokenizer: tokenizers.Tokenizer,
        max_tokens: int,
        *,
        num_special_tokens: int = 2,
        embed: Embed | None = None,
    ) -> Chunker: ...


def effective_limit(options: ChunkOptions, max_tokens: int, num_special_tokens: int = 2) -> int:
    """The most tokens (without special tokens) a chunk may have for this model."""
    return min(options.chunk_tokens, max_tokens - num_special_tokens)


def make_chunker(
    options: ChunkOptions,
    tokenizer: tokenizers.Tokenizer,
    max_tokens: int,
    *,
    num_special_tokens: int = 2,
    embed: Embed | None = None,
) -> Chunker:
    """A chunker for ``options`` whose chunks fit a model of ``max_tokens`` (special tokens included).

    The tokenizer is copied with truncation and padding off; the caller's one is not changed.
    ``embed`` (texts → one row per text) is required by the ``semantic`` splitter.
    """
    if num_special_tokens < 0:
        raise ChunkingError(
            f"num_special_tokens must be zero or positive, got {num_special_tokens}"
        )
    limit = effective_limit(options, max_tokens, num_special_tokens)
    if limit <= 0:
        raise ChunkingError(
            f"the model accepts {max_tokens} tokens including {num_special_tokens} special ones: "
            "no room for a chunk"
        )
    if options.overlap >= limit:
        raise ChunkingError(
            f"overlap ({options.overlap}) must be smaller than the chunk size, {limit} tokens "
            f"(chunk_tokens={options.chunk_tokens}, model limit {max_tokens} - "
            f"{num_special_tokens} special tokens); lower --overlap"
        )
    if options.splitter == "semantic" and embed is None:
        raise ChunkingError("the semantic splitter needs an embed function (texts -> vectors)")
    return _CLASSES[options.splitter](options, private_copy(tokenizer), limit, embed)
