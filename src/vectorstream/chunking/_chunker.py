"""The chunkers: one class per splitter over a shared section loop that emits exact chunks."""

from __future__ import annotations

import bisect
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import tokenizers

from ..errors import ChunkingError, VectorstreamError
from ..types import Chunk, Section
from . import _structure
from ._options import SEMANTIC_PERCENTILE, ChunkOptions
from ._sentences import split_sentences
from ._spans import Span, pack, pack_with_overlap, strip, windows
from ._tokens import SectionTokens, cuts_are_context_free, splits_at_punctuation

log = logging.getLogger("vectorstream.chunking")

# No chunk is longer than this many characters per token of the limit. Tokenizers map a very long
# "word" (1 MB without spaces or punctuation) to one unknown token; without a character cap that
# would be a 1 MB chunk whose vector says nothing.
MAX_CHARS_PER_TOKEN = 32
# Sentences sent to `embed` at once by the semantic splitter (bounds its memory on long sections).
EMBED_BATCH = 256

Embed = Callable[[list[str]], np.ndarray]
# A span with the headings found inside the section text above it (markdown only).
_Piece = tuple[int, int, tuple[str, ...]]


@runtime_checkable
class Chunker(Protocol):
    """Turns the sections of one source into chunks, streaming."""

    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]: ...


class _BaseChunker(ABC):
    """What every splitter shares: the limits, exact token counts, and the one-source check.

    A splitter either plans each section on its own (:class:`_SectionChunker`) or reads the
    sections of a source together (:class:`MarkdownChunker`).
    """

    def __init__(
        self,
        options: ChunkOptions,
        tokenizer: tokenizers.Tokenizer,
        limit: int,
        embed: Embed | None = None,
    ) -> None:
        self.options = options
        self.tokenizer = tokenizer
        self.limit = limit
        self.overlap = options.overlap
        self.max_chars = limit * MAX_CHARS_PER_TOKEN
        self.embed = embed
        # Whether a span cut at word boundaries keeps the section's tokens (then no re-tokenizing).
        self.context_free = cuts_are_context_free(tokenizer)
        self.punct_cuts = splits_at_punctuation(tokenizer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit}, options={self.options!r})"

    @abstractmethod
    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]: ...

    def _with_text(self, sections: Iterable[Section]) -> Iterator[tuple[Section, SectionTokens]]:
        """The sections with text, each tokenized once; sections of a second source raise."""
        source: str | None = None
        for section in sections:
            if source is None:
                source = section.source
            elif section.source != source:
                raise ChunkingError(
                    f"a chunker call takes the sections of one source; got {source!r} "
                    f"and then {section.source!r}"
                )
            text = section.text
            if not text or text.isspace():
                continue  # image sections and blank pages have nothing to chunk
            yield section, SectionTokens.encode(self.tokenizer, text, punct_cuts=self.punct_cuts)

    # -- exact counts and limits -------------------------------------------------------------

    def _exact(
        self, st: SectionTokens, pieces: list[_Piece]
    ) -> list[tuple[int, int, int, tuple[str, ...]]]:
        """Each piece with its true token count; pieces over a limit are cut again.

        A piece cut at word boundaries of a context-free tokenizer has exactly the tokens of its
        span; the others are re-tokenized in one batch.
        """
        counts: list[int | None] = []
        unsure: list[int] = []
        for i, (s, e, _) in enumerate(pieces):
            if self.context_free and st.clean_cut(s) and st.clean_cut(e):
                counts.append(st.count(s, e))
            else:
                counts.append(None)
                unsure.append(i)
        unsure_set = set(unsure)
        if unsure:
            texts = [st.text[pieces[i][0] : pieces[i][1]] for i in unsure]
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
            for i, encoding in zip(unsure, encodings, strict=True):
                counts[i] = len(encoding.ids)
        out: list[tuple[int, int, int, tuple[str, ...]]] = []
        for i, ((s, e, extra), n) in enumerate(zip(pieces, counts, strict=True)):
            assert n is not None
            if n <= self.limit and e - s <= self.max_chars:
                out.append((s, e, n, extra))
            else:
                trusted = i not in unsure_set
                out.extend((a, b, m, extra) for a, b, m in self._repair(st, s, e, trusted))
        return _in_order(out) if self.overlap else out

    def _repair(
        self, st: SectionTokens, start: int, end: int, trusted: bool
    ) -> list[tuple[int, int, int]]:
        """Cut ``text[start:end]`` until every part is within the token and character limits.

        ``trusted``: the section's own tokens are exact for this span (no re-tokenizing needed).
        """
        if trusted:
            tokens, base, lo, hi = st, 0, start, end
        else:
            tokens = SectionTokens.encode(self.tokenizer, st.text[start:end])
            base, lo, hi = start, 0, end - start
        n = tokens.count(lo, hi)
        if n <= self.limit and end - start <= self.max_chars:
            return [(start, end, n)]
        if n > self.limit:
            parts = windows(tokens, lo, hi, self.limit)
        elif n >= 2:
            parts = windows(tokens, lo, hi, (n + 1) // 2)
        else:
            parts = []
        if len(parts) < 2:
            # One token over the character cap (an unknown "word"): cut by characters.
            step = max(1, min(self.max_chars, (hi - lo + 1) // 2))
            parts = [strip(tokens.text, a, min(a + step, hi)) for a in range(lo, hi, step)]
            parts = [p for p in parts if p[0] < p[1]]
        if len(parts) < 2 and end - start <= 1:
            log.warning("one character exceeds the chunk limit of %d tokens", self.limit)
            return [(start, end, n)]
        out: list[tuple[int, int, int]] = []
        for a, b in parts:
            a, b = a + base, b + base
            clean = self.context_free and st.clean_cut(a) and st.clean_cut(b)
            out.extend(self._repair(st, a, b, clean))
        log.debug("re-cut a piece of %d characters into %d chunks", end - start, len(out))
        return out


def _in_order(
    pieces: list[tuple[int, int, int, tuple[str, ...]]],
) -> list[tuple[int, int, int, tuple[str, ...]]]:
    """Pieces by start, dropping any inside the one before it.

    Only overlapping windows need this: a window cut again by ``_repair`` may end in parts that
    start after the next window does; a part inside another chunk adds nothing.
    """
    out: list[tuple[int, int, int, tuple[str, ...]]] = []
    for piece in sorted(pieces, key=lambda p: (p[0], -p[1])):
        if out and piece[1] <= out[-1][1]:
            continue
        out.append(piece)
    return out


class _SectionChunker(_BaseChunker):
    """The section loop: spans from the splitter, then exact token counts and the limits enforced.

    A splitter supplies one method, :meth:`_spans`: the chunk spans of one tokenized section.
    """

    @abstractmethod
    def _spans(self, st: SectionTokens, section: Section) -> list[_Piece]:
        """Spans of ``section.text`` (tokenized as ``st``), in order, covering its text."""

    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        index = 0
        for section, st in self._with_text(sections):
            text, at = section.text, section.start
            for start, end, n_tokens, extra in self._exact(st, self._spans(st, section)):
                yield Chunk(
                    text=text[start:end],
                    source=section.source,
                    chunk_index=index,
                    start=at + start,
                    end=at + end,
                    section_index=section.index,
                    page=section.page,
                    headings=section.headings + extra,
                    metadata=section.metadata,
                    n_tokens=n_tokens,
                )
                index += 1


class TokenChunker(_SectionChunker):
    """Windows of ``limit`` tokens with ``overlap`` tokens shared, ends snapped to word breaks."""

    def _spans(self, st: SectionTokens, section: Section) -> list[_Piece]:
        return [(s, e, ()) for s, e in windows(st, 0, len(st.text), self.limit, self.overlap)]


class SentenceChunker(_SectionChunker):
    """Consecutive sentences packed up to the limit; whole sentences carried as overlap."""

    def _spans(self, st: SectionTokens, section: Section) -> list[_Piece]:
        sentences = split_sentences(st.text)
        spans = pack_with_overlap(st, sentences, self.limit, self.overlap)
        return [(s, e, ()) for s, e in spans]


class MarkdownChunker(_BaseChunker):
    """Structure first: chunks hold whole sections of one parent heading, packed up to the budget,
    and a longer section is cut at its strongest boundaries (paragraphs, then sentences, then
    words) into parts of even size. Consecutive sections of a source join when they continue one
    another (same metadata, no gap); see ``_structure`` for the plan. Each chunk keeps the heading
    path of its first atom, headings found inside the section text included."""

    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        window = _structure.Window(self.limit, self.max_chars)
        index = 0
        for section, st in self._with_text(sections):
            for chunk in self._chunks(window.parts, window.add(section, st), index):
                yield chunk
                index += 1
        for chunk in self._chunks(window.parts, window.flush(), index):
            yield chunk
            index += 1

    def _chunks(
        self, parts: Mapping[int, _structure.Part], groups: list[list[_structure.Atom]], index: int
    ) -> list[Chunk]:
        """Chunks of planned atom groups, with exact token counts and the limits enforced."""
        spans: list[tuple[int, str, int | None, list[_structure.Atom]]] = []
        for atoms in groups:
            first, last = atoms[0], atoms[-1]
            head = parts[first.part].section
            if first.part == last.part:
                text = head.text[first.start : last.end]
                seams = True
            else:
                texts = [parts[k].section.text for k in range(first.part, last.part + 1)]
                seams = all(
                    a[-1:].isspace() or b[:1].isspace() for a, b in itertools.pairwise(texts)
                )
                offset = parts[last.part].section.start - head.start
                text = "".join(texts)[first.start : offset + last.end]
            exact = self.context_free and seams and all(a.clean for a in atoms)
            n = sum(a.tokens for a in atoms) if exact else None
            spans.append((head.start + first.start, text, n, atoms))
        unsure = [k for k, span in enumerate(spans) if span[2] is None]
        if unsure:
            encodings = self.tokenizer.encode_batch(
                [spans[k][1] for k in unsure], add_special_tokens=False
            )
            for k, encoding in zip(unsure, encodings, strict=True):
                start, text, _, atoms = spans[k]
                spans[k] = (start, text, len(encoding.ids), atoms)
        out: list[Chunk] = []
        for start, text, n, atoms in spans:
            assert n is not None
            if n <= self.limit and len(text) <= self.max_chars:
                pieces = [(0, len(text), n)]
            else:
                own = SectionTokens.encode(self.tokenizer, text, punct_cuts=self.punct_cuts)
                pieces = self._repair(own, 0, len(text), True)
            # A piece takes the section and headings of the atom it starts in.
            atom_starts = [parts[a.part].section.start + a.start for a in atoms]
            for a, b, m in pieces:
                first = atoms[max(0, bisect.bisect_right(atom_starts, start + a) - 1)]
                section = parts[first.part].section
                out.append(
                    Chunk(
                        text=text[a:b],
                        source=section.source,
                        chunk_index=index,
                        start=start + a,
                        end=start + b,
                        section_index=section.index,
                        page=section.page,
                        headings=first.path,
                        metadata=section.metadata,
                        n_tokens=m,
                    )
                )
                index += 1
        return out


class SemanticChunker(_SectionChunker):
    """Sentences grouped where adjacent sentences stay similar, each group packed to the limit."""

    def _spans(self, st: SectionTokens, section: Section) -> list[_Piece]:
        pieces = self._sentence_pieces(st)
        if len(pieces) < 2:
            return [(s, e, ()) for s, e in pieces]
        sims = self._similarities([st.text[s:e] for s, e in pieces])
        threshold = self.options.semantic_threshold
        if threshold is None:
            threshold = float(np.percentile(sims, SEMANTIC_PERCENTILE))
        out: list[_Piece] = []
        group: list[Span] = [pieces[0]]
        for piece, sim in zip(pieces[1:], sims, strict=True):
            if sim < threshold:
                out.extend((s, e, ()) for s, e in pack(st, group, self.limit))
                group = []
            group.append(piece)
        out.extend((s, e, ()) for s, e in pack(st, group, self.limit))
        return out

    def _sentence_pieces(self, st: SectionTokens) -> list[Span]:
        pieces: list[Span] = []
        for s, e in split_sentences(st.text):
            if st.count(s, e) <= self.limit:
                pieces.append((s, e))
            else:
                pieces.extend(windows(st, s, e, self.limit))
        return pieces

    def _similarities(self, texts: list[str]) -> np.ndarray:
        """Cosine similarity of each sentence with the next (``len(texts) - 1`` values)."""
        assert self.embed is not None
        rows: list[np.ndarray] = []
        for i in range(0, len(texts), EMBED_BATCH):
            batch = texts[i : i + EMBED_BATCH]
            try:
                vectors = np.asarray(self.embed(batch), dtype=np.float64)
            except VectorstreamError:
                raise
            except Exception as exc:
                raise ChunkingError(
                    f"the semantic splitter's embed function failed: {exc}"
                ) from exc
            if (
                vectors.ndim != 2
                or vectors.shape[0] != len(batch)
                or not np.isfinite(vectors).all()
            ):
                raise ChunkingError(
                    f"embed must return one finite vector per sentence: {len(batch)} sentences "
                    f"gave an array of shape {vectors.shape}"
                )
            rows.append(vectors)
        matrix = np.concatenate(rows)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = matrix / np.where(norms == 0.0, 1.0, norms)
        return np.einsum("ij,ij->i", unit[:-1], unit[1:])
