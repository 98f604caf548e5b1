"""The default splitter's plan: a source's sections as atoms, packed into chunks by structure.

Atoms are heading lines, sentences and code blocks in document order. Each carries the strength
of the boundary in front of it, strongest first:

    HARD (0)   another part of the source that no chunk may join (other metadata, a gap)
    1 … 6      a heading at that depth of the heading path
    PARA (7)   a paragraph, or a section or page cut without a new heading
    SENT (8)   a sentence
    LINE (9)   a line break inside a long sentence or a long code block
    WORD (10)  inside a long line, in windows of a quarter budget

A sentence or code block over half the budget is cut finer (lines, then windows) so that the plan
can even out the parts of a section rather than leave a small rest.

Chunks are chosen by dynamic programming over a bounded window of atoms. The cost of a chunk is
one unit (so chunks come out as full as the budget allows), plus the cost of the boundary it ends
at, plus penalties: under a quarter of the budget, a heading left at its end, and crossing a
heading without starting and ending at one at least as strong (a chunk holds whole sections of one
parent, or part of one section; it leaves that nesting only to spare a small chunk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..types import Section
from . import _markdown
from ._sentences import split_sentences
from ._spans import fit, strip, windows
from ._tokens import SectionTokens

HARD = 0
PARA = 7
SENT = 8
LINE = 9
WORD = 10
DEEPEST_HEADING = 6

# Cost of ending a chunk at a boundary of each strength, in units of one extra chunk.
_CUT_COST = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.15, 0.5, 0.7, 1.0)
SMALL_COST = 1.5  # a chunk under a quarter of the budget
ORPHAN_COST = 3.0  # a chunk that ends with a heading line, away from its body
NEST_COST = 1.2  # a chunk that crosses a heading without starting and ending at one as strong
# Atoms planned at once: the window is planned when it holds this many budgets of tokens, and
# all but its last ``KEEP_BUDGETS`` budgets are emitted (the plan there depends on what follows).
WINDOW_BUDGETS = 16
KEEP_BUDGETS = 2


@dataclass(frozen=True, slots=True)
class Atom:
    """``section.text[start:end]`` of part ``part``: ``tokens`` long, ``boundary`` in front."""

    start: int
    end: int
    tokens: int
    boundary: int
    heading: bool
    part: int
    path: tuple[str, ...]
    clean: bool  # both ends fall between words: ``tokens`` is exact for a context-free tokenizer


@dataclass(frozen=True, slots=True)
class Part:
    """A section of the window with its tokens."""

    section: Section
    tokens: SectionTokens

    @property
    def end(self) -> int:
        return self.section.start + len(self.section.text)


def _is_fence(text: str, start: int) -> bool:
    return _markdown.FENCE.match(text, start) is not None


def _depth(path: tuple[str, ...]) -> int:
    return max(1, min(DEEPEST_HEADING, len(path)))


def _diverge(before: tuple[str, ...], after: tuple[str, ...]) -> int:
    """The strength of the boundary between two heading paths: where they part."""
    common = 0
    for a, b in zip(before, after, strict=False):
        if a != b:
            break
        common += 1
    return max(1, min(DEEPEST_HEADING, common + 1))


def section_atoms(
    part: int,
    st: SectionTokens,
    section: Section,
    limit: int,
    first: int,
    previous_path: tuple[str, ...],
) -> list[Atom]:
    """The atoms of one section. ``first`` is the boundary in front of the section (HARD or
    PARA); a change of heading path from ``previous_path`` makes it a heading boundary."""
    text = st.text
    base = section.headings
    if first != HARD and base != previous_path:
        first = _diverge(previous_path, base)
    atoms: list[Atom] = []
    pending = first
    stack: list[tuple[int, str]] = []
    path = base

    def add(start: int, end: int, boundary: int, heading: bool) -> None:
        nonlocal pending
        atoms.append(
            Atom(
                start,
                end,
                st.count(start, end),
                min(pending, boundary),
                heading,
                part,
                path,
                st.clean_cut(start) and st.clean_cut(end),
            )
        )
        pending = PARA

    for block in _markdown.blocks(text):
        if block.level:
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            # A section whose text repeats its own heading line must not list it twice.
            if stack or not base or block.title != base[-1]:
                stack.append((block.level, block.title))
            path = base + tuple(title for _, title in stack)
            pieces = fit(st, block.start, block.end, limit)
            for k, (s, e) in enumerate(pieces):
                add(s, e, _depth(path) if k == 0 else WORD, k == len(pieces) - 1)
            continue
        if _is_fence(text, block.start):
            # Code: whole while it fits, else by lines (sentence rules mean nothing there).
            if st.count(block.start, block.end) <= limit:
                s, e = strip(text, block.start, block.end)
                if s < e:
                    add(s, e, PARA, False)
                continue
            sentences = [(block.start, block.end)]
        else:
            sentences = split_sentences(text, block.start, block.end)
        boundary = PARA
        for s, e in sentences:
            for k, (a, b, inner) in enumerate(_fine(st, s, e, limit)):
                add(a, b, boundary if k == 0 else inner, False)
            boundary = SENT
    return atoms


def _fine(st: SectionTokens, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
    """``text[start:end]`` whole if at most half the budget, else its lines, each line over half
    the budget in windows of a quarter budget: ``(start, end, boundary in front)``."""
    half = limit // 2
    if st.count(start, end) <= half:
        s, e = strip(st.text, start, end)
        return [(s, e, SENT)] if s < e else []
    out: list[tuple[int, int, int]] = []
    text = st.text
    pos = start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl
        s, e = strip(text, pos, stop)
        if s < e:
            if st.count(s, e) <= half:
                out.append((s, e, LINE))
            else:
                spans = windows(st, s, e, max(1, limit // 4))
                out.extend((a, b, LINE if k == 0 else WORD) for k, (a, b) in enumerate(spans))
        pos = stop + 1
    return out


def plan(
    atoms: list[Atom], parts: Mapping[int, Part], limit: int, max_chars: int, final: bool
) -> list[tuple[int, int]]:
    """Chunks as ``(i, j)`` ranges of ``atoms``, covering them in order at the least cost.

    ``final``: the atoms end the source; otherwise more may follow, and the last chunk's end is
    costed as a paragraph cut.
    """
    n = len(atoms)
    small = limit / 4
    inf = float("inf")
    cost = [0.0] + [inf] * n
    back = [0] * (n + 1)
    starts = [parts[a.part].section.start + a.start for a in atoms]
    ends = [parts[a.part].section.start + a.end for a in atoms]
    for j in range(1, n + 1):
        end_boundary = atoms[j].boundary if j < n else (HARD if final else PARA)
        tail = _CUT_COST[end_boundary]
        if atoms[j - 1].heading and (j < n or not final):
            tail += ORPHAN_COST
        tokens = 0
        strongest = WORD + 1  # the strongest boundary inside the chunk
        best, best_i = inf, j - 1
        for i in range(j - 1, -1, -1):
            tokens += atoms[i].tokens
            if i < j - 1:
                strongest = min(strongest, atoms[i + 1].boundary)
                if strongest == HARD or tokens > limit or ends[j - 1] - starts[i] > max_chars:
                    break
            c = cost[i] + 1.0 + tail
            if tokens < small:
                c += SMALL_COST
            if strongest <= DEEPEST_HEADING and (
                atoms[i].boundary > strongest or end_boundary > strongest
            ):
                c += NEST_COST
            if c < best:
                best, best_i = c, i
        cost[j], back[j] = best, best_i
    out: list[tuple[int, int]] = []
    j = n
    while j > 0:
        out.append((back[j], j))
        j = back[j]
    out.reverse()
    return out


class Window:
    """Atoms of consecutive sections waiting to be planned, with the sections they come from.

    ``add`` and ``flush`` return the chunks (atom lists) that became final; their sections stay in
    ``parts`` until the next call.
    """

    def __init__(self, limit: int, max_chars: int) -> None:
        self.limit = limit
        self.max_chars = max_chars
        self.parts: dict[int, Part] = {}
        self.atoms: list[Atom] = []
        self.tokens = 0
        self._next = 0
        self._path: tuple[str, ...] = ()
        self._last: Part | None = None

    def add(self, section: Section, st: SectionTokens) -> list[list[Atom]]:
        self._prune()
        joinable = self._last is not None and _joinable(self._last, section)
        out = [] if joinable else self._emit(final=True)
        part = self._next
        self._next += 1
        self._last = self.parts[part] = Part(section, st)
        first = PARA if joinable else HARD
        atoms = section_atoms(part, st, section, self.limit, first, self._path)
        if atoms:
            self._path = atoms[-1].path
        self.atoms.extend(atoms)
        self.tokens += sum(a.tokens for a in atoms)
        if self.tokens > WINDOW_BUDGETS * self.limit:
            out.extend(self._emit(final=False))
        return out

    def flush(self) -> list[list[Atom]]:
        self._prune()
        return self._emit(final=True)

    def _prune(self) -> None:
        # Sections no waiting atom comes from are done with (the last one is kept in _last).
        keep_from = self.atoms[0].part if self.atoms else self._next
        for number in [k for k in self.parts if k < keep_from]:
            del self.parts[number]

    def _emit(self, final: bool) -> list[list[Atom]]:
        if not self.atoms:
            return []
        ranges = plan(self.atoms, self.parts, self.limit, self.max_chars, final)
        if not final:
            # Keep the last chunks (at least KEEP_BUDGETS budgets of tokens) for the next plan:
            # where they end depends on what follows.
            kept = 0
            while len(ranges) > 1 and kept < KEEP_BUDGETS * self.limit:
                i, j = ranges.pop()
                kept += sum(a.tokens for a in self.atoms[i:j])
        out = [self.atoms[i:j] for i, j in ranges]
        self.atoms = self.atoms[ranges[-1][1] :]
        self.tokens = sum(a.tokens for a in self.atoms)
        return out


def _joinable(before: Part, section: Section) -> bool:
    """Whether ``section`` continues ``before`` in the document, so that a chunk may span both."""
    return (
        before.end == section.start
        and before.section.source == section.source
        and _same(before.section.metadata, section.metadata)
        and before.section.image is None
    )


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # values whose comparison fails (arrays): treat as different
        return False
