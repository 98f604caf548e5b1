"""The model tokenizer as the chunkers see it: token spans of a section, counted by position.

A section is tokenized once; every candidate piece is then counted by binary search over the
token start offsets, so packing sentences or paragraphs never re-tokenizes text.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import tokenizers

from ..errors import ChunkingError, ModelError

log = logging.getLogger("vectorstream.chunking")

# Tokenizer parts under which a cut between two pre-tokenized words leaves both words' tokens
# unchanged: the word-piece model sees one word at a time, these pre-tokenizers split at
# whitespace and punctuation only, and these normalizers work character by character. With them,
# a chunk cut at word boundaries has exactly the tokens of its span in the section encoding.
_CONTEXT_FREE_MODELS = frozenset({"WordPiece"})
_CONTEXT_FREE_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_CONTEXT_FREE_NORMALIZERS = frozenset(
    {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip"}
)


def load_tokenizer(path: str | os.PathLike[str]) -> tokenizers.Tokenizer:
    """Load a ``tokenizer.json`` (or the one in a model folder) with truncation and padding off."""
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises plain Exception subclasses
        raise ModelError(f"cannot load tokenizer from {file}: {exc}") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def private_copy(tokenizer: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """``tokenizer`` if it neither truncates nor pads, else a copy with both off.

    The caller's tokenizer is never changed. Copying costs tens of milliseconds (a JSON round
    trip), so a tokenizer from :func:`load_tokenizer` is used as it is: a worker that builds a
    chunker per source must not pay that per source.
    """
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    try:
        copy = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    except Exception as exc:
        raise ChunkingError(f"cannot copy the tokenizer: {exc}") from exc
    copy.no_truncation()
    copy.no_padding()
    return copy


def _component_types(component: object) -> list[str]:
    # A Sequence normalizer / pre-tokenizer iterates over its parts.
    if component is None:
        return []
    name = type(component).__name__
    if name == "Sequence":
        return [t for part in component for t in _component_types(part)]  # type: ignore[attr-defined]
    return [name]


def cuts_are_context_free(tokenizer: tokenizers.Tokenizer) -> bool:
    """Whether re-tokenizing a span cut at word boundaries reproduces the section's tokens."""
    try:
        model = type(tokenizer.model).__name__
        pre = _component_types(tokenizer.pre_tokenizer)
        norm = _component_types(tokenizer.normalizer)
    except Exception:  # an unfamiliar component: re-tokenizing every piece is always correct
        log.debug("cannot inspect the tokenizer; every chunk will be re-tokenized", exc_info=True)
        return False
    return (
        model in _CONTEXT_FREE_MODELS
        and bool(pre)
        and all(p in _CONTEXT_FREE_PRE_TOKENIZERS for p in pre)
        and all(n in _CONTEXT_FREE_NORMALIZERS for n in norm)
    )


# Sections longer than this are tokenized in blocks of about this many characters, cut at
# whitespace (where every supported tokenizer starts a new word), with one batch call.
BLOCK_CHARS = 32_768
_SPACE = re.compile(r"[ \n\t]")  # whitespace to every tokenizer; "\\x1f" is not
# With BERT's pre-tokenizer every punctuation character is a word of its own, so a cut just before
# one is exact too: this lets text without whitespace (base64, minified code) be split in blocks.
_SPACE_OR_PUNCT = re.compile(r"[ \n\t!-/:-@\[-`{-~]")


def _blocks(text: str, size: int, punct_cuts: bool = False) -> list[tuple[int, int]]:
    """``(start, end)`` blocks of about ``size`` characters, each cut just before whitespace
    (or, with ``punct_cuts``, before ASCII punctuation); a block grows until such a place."""
    out = []
    pos, n = 0, len(text)
    pattern = _SPACE_OR_PUNCT if punct_cuts else _SPACE
    while pos < n:
        target = pos + size
        if target >= n:
            out.append((pos, n))
            break
        cut = max(text.rfind(c, pos + size // 2, target) for c in " \n\t")
        if cut <= pos:
            found = pattern.search(text, pos + max(1, size // 2))
            cut = found.start() if found else n
        out.append((pos, cut))
        pos = cut
    return out


def splits_at_punctuation(tokenizer: tokenizers.Tokenizer) -> bool:
    """Whether the tokenizer makes every punctuation character a word (BERT's pre-tokenizer)."""
    return type(tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer" and cuts_are_context_free(
        tokenizer
    )


@dataclass(frozen=True, slots=True, eq=False)
class SectionTokens:
    """Token character spans of one text, with helpers to count and to find good cuts.

    ``starts``/``ends`` are character offsets; ``word_start[i]`` says token ``i`` begins a new
    pre-tokenizer word (so a cut before it does not split a word).
    """

    text: str
    starts: list[int]
    ends: list[int]
    word_start: list[bool]

    @classmethod
    def encode(
        cls,
        tokenizer: tokenizers.Tokenizer,
        text: str,
        block_chars: int = BLOCK_CHARS,
        punct_cuts: bool = False,
    ) -> SectionTokens:
        """Tokenize ``text`` once, in blocks cut at word breaks so the batch API can use threads.

        ``punct_cuts`` (only for tokenizers where :func:`splits_at_punctuation` holds) lets a
        block also end before ASCII punctuation.
        """
        if len(text) <= block_chars:
            return cls.from_encodings(text, [0], [tokenizer.encode(text, add_special_tokens=False)])
        bounds = _blocks(text, block_chars, punct_cuts)
        pieces = [text[a:b] for a, b in bounds]
        encodings = tokenizer.encode_batch(pieces, add_special_tokens=False)
        return cls.from_encodings(text, [a for a, _ in bounds], encodings)

    @classmethod
    def from_encodings(
        cls, text: str, bases: list[int], encodings: list[tokenizers.Encoding]
    ) -> SectionTokens:
        """Join the encodings of consecutive blocks of ``text`` starting at ``bases``."""
        starts: list[int] = []
        ends: list[int] = []
        word_start: list[bool] = []
        for base, encoding in zip(bases, encodings, strict=True):
            offsets = encoding.offsets
            if not offsets:
                continue
            starts.extend(a + base for a, _ in offsets)
            ends.extend(b + base for _, b in offsets)
            words = encoding.word_ids
            # Tokens of one word share its id; a token without one (a special token) stands alone.
            word_start.append(True)
            word_start.extend(b is None or a != b for a, b in itertools.pairwise(words))
        return cls(text, starts, ends, word_start)

    def __len__(self) -> int:
        return len(self.starts)

    def index_at(self, pos: int) -> int:
        """Index of the first token starting at or after character ``pos``."""
        return bisect_left(self.starts, pos)

    def count(self, start: int, end: int) -> int:
        """Number of tokens starting inside ``text[start:end]``."""
        return bisect_left(self.starts, end) - bisect_left(self.starts, start)

    def clean_cut(self, pos: int) -> bool:
        """Whether a cut at character ``pos`` falls between two words (or at an end)."""
        i = bisect_left(self.starts, pos)
        if i == 0 or i == len(self.starts):
            return i == 0 or self.ends[i - 1] <= pos
        return self.ends[i - 1] <= pos and self.word_start[i]

    def gap_before(self, i: int) -> str:
        """The characters between token ``i - 1`` and token ``i`` (whitespace, usually)."""
        return self.text[self.ends[i - 1] : self.starts[i]]
