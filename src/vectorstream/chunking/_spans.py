"""Span arithmetic shared by the splitters: token windows, fitting pieces, greedy packing.

A span is ``(start, end)`` in characters of the section text, without surrounding whitespace.
Token counts come from :class:`SectionTokens` (one tokenization of the whole section).
"""

from __future__ import annotations

from ._sentences import split_sentences
from ._tokens import SectionTokens

Span = tuple[int, int]


def strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _snap_end(st: SectionTokens, i: int, j: int, size: int) -> int:
    """Move the cut before token ``j`` back to a line break, a space or a word start if near."""
    lo_line = max(i + 1, j - max(1, size // 8))
    lo = max(i + 1, j - max(1, size // 4))
    starts, ends = st.starts, st.ends
    for t in range(j, lo_line - 1, -1):
        if starts[t] > ends[t - 1] and "\n" in st.gap_before(t):
            return t
    for t in range(j, lo - 1, -1):
        if starts[t] > ends[t - 1]:
            return t
    for t in range(j, lo - 1, -1):
        if st.word_start[t]:
            return t
    return j


def _snap_start(st: SectionTokens, k: int, j: int) -> int:
    """Move the start of an overlapping window forward (at most to ``j``) onto a word start."""
    starts, ends = st.starts, st.ends
    for t in range(k, j + 1):
        if starts[t] > ends[t - 1]:
            return t
    for t in range(k, j + 1):
        if st.word_start[t]:
            return t
    return k


def windows(st: SectionTokens, start: int, end: int, size: int, overlap: int = 0) -> list[Span]:
    """Windows of at most ``size`` tokens over ``text[start:end]``, ``overlap`` tokens shared.

    Windows are exact token spans; a cut moves back (up to a quarter window) to avoid splitting
    a word. Consecutive windows leave no gap: the next one starts at or before the previous end.
    """
    text = st.text
    a, b = st.index_at(start), st.index_at(end)
    if b - a <= size:
        span = strip(text, start, end)
        return [span] if span[0] < span[1] else []
    out: list[Span] = []
    i = a
    while True:
        j = b if i + size >= b else _snap_end(st, i, i + size, size)
        span = strip(text, start if i == a else st.starts[i], end if j == b else st.starts[j])
        if span[0] < span[1]:
            out.append(span)
        if j >= b:
            return out
        i = _snap_start(st, max(j - overlap, i + 1), j) if overlap else j


def fit(st: SectionTokens, start: int, end: int, limit: int) -> list[Span]:
    """``text[start:end]`` as pieces of at most ``limit`` tokens: whole, else sentences, else windows."""
    if st.count(start, end) <= limit:
        span = strip(st.text, start, end)
        return [span] if span[0] < span[1] else []
    out: list[Span] = []
    for s, e in split_sentences(st.text, start, end):
        if st.count(s, e) <= limit:
            out.append((s, e))
        else:
            out.extend(windows(st, s, e, limit))
    return out


def pack(st: SectionTokens, pieces: list[Span], limit: int) -> list[Span]:
    """Join consecutive pieces greedily while the joined span stays within ``limit`` tokens."""
    out: list[Span] = []
    cur: Span | None = None
    for piece in pieces:
        if cur is not None and st.count(cur[0], piece[1]) <= limit:
            cur = (cur[0], piece[1])
            continue
        if cur is not None:
            out.append(cur)
        cur = piece
    if cur is not None:
        out.append(cur)
    return out


def pack_with_overlap(
    st: SectionTokens, pieces: list[Span], limit: int, overlap: int
) -> list[Span]:
    """Like :func:`pack`, but each chunk starts with whole trailing pieces of the previous one
    (at most ``overlap`` tokens of them). A piece over ``limit`` is cut into overlapping windows."""
    out: list[Span] = []
    cur: list[Span] = []
    for piece in pieces:
        if cur and st.count(cur[0][0], piece[1]) <= limit:
            cur.append(piece)
            continue
        if cur:
            out.append((cur[0][0], cur[-1][1]))
            # Carry whole pieces from the end while they fit the overlap and leave room for
            # `piece`; never all of them, so each chunk brings something new.
            k = len(cur)
            end = cur[-1][1]
            while (
                k > 1
                and st.count(cur[k - 1][0], end) <= overlap
                and st.count(cur[k - 1][0], piece[1]) <= limit
            ):
                k -= 1
            cur = cur[k:]
        if st.count(piece[0], piece[1]) > limit:
            out.extend(windows(st, piece[0], piece[1], limit, overlap))
            cur = []
            continue
        cur.append(piece)
    if cur:
        out.append((cur[0][0], cur[-1][1]))
    return out
