"""A rule-based sentence splitter: linear time, no NLP dependency.

Rules, in order:

* a blank line, or a line break before a list item, a heading or a quote, always ends a sentence;
* ``!``, ``?``, ``…`` and CJK full stops end a sentence (with any closing quotes and brackets);
* ``.`` ends a sentence only when whitespace follows and the next word does not start in lower
  case, and the word before it is not a known abbreviation (``Dr.``, ``e.g.``, ``Fig.``), an
  initial (``J.``) or a dotted abbreviation (``U.S.``); ``3.14`` has no whitespace after the dot.
"""

from __future__ import annotations

import re

# Abbreviations that are almost never the last word of a sentence. Words like "etc." and "Inc."
# often are, so they are left out: a wrong split there costs less than a missed one.
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "rev",
        "gen",
        "col",
        "capt",
        "lt",
        "sgt",
        "hon",
        "pres",
        "gov",
        "sen",
        "rep",
        "vs",
        "v",
        "cf",
        "al",
        "e.g",
        "i.e",
        "viz",
        "approx",
        "ca",
        "fig",
        "figs",
        "eq",
        "eqs",
        "sec",
        "ch",
        "chap",
        "vol",
        "vols",
        "ed",
        "eds",
        "pp",
        "p",
        "para",
        "dept",
        "univ",
        "assn",
        "bros",
        "corp",
        "est",
        "misc",
        "no",
        "nos",
        "art",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    ]
)
# "No. 5" is an abbreviation; "I said no. Then" is not: these count only before a digit.
_ABBREVIATIONS_BEFORE_DIGIT = frozenset({"no", "nos", "art", "p", "pp", "vol", "ch", "sec", "fig"})

_HARD_BREAK = re.compile(
    r"\n[ \t]*\n"  # blank line
    r"|\n(?=[ \t]*(?:[-*+•]\s|\d{1,3}[.)]\s|#{1,6}\s|>))"  # line starting a list item, heading, quote
)
_END = re.compile(r"(?:[.!?…‽]+|[。！？]+)[\"'”’»)\]」』]*")
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_OPENERS = "\"'“‘«([{"


def _is_abbreviation(text: str, dot: int, nxt: str) -> bool:
    """Whether the ``.`` at ``dot`` belongs to the word before it rather than ending a sentence."""
    begin = dot
    while begin > 0 and not text[begin - 1].isspace() and dot - begin < 24:
        begin -= 1
    word = text[begin:dot].lstrip(_OPENERS).lower()
    if not word:
        return False
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. R. R. Tolkien"
    if word in ABBREVIATIONS and word not in _ABBREVIATIONS_BEFORE_DIGIT:
        return True
    if word in _ABBREVIATIONS_BEFORE_DIGIT:
        return nxt.isdigit()
    return _DOTTED.fullmatch(word) is not None


def _ends_here(text: str, match: re.Match[str]) -> bool:
    end = match.end()
    punct = match.group()
    cjk = punct[0] in "。！？"
    if end >= len(text):
        return True
    if not cjk and not text[end].isspace():
        return False  # "3.14", "a.b", "?!x": no sentence ends inside a word
    if "." not in punct or any(c in punct for c in "!?…‽"):
        return True
    # A single/multiple dot: look at the next word.
    j = end
    while j < len(text) and text[j].isspace():
        j += 1
    nxt = text[j] if j < len(text) else ""
    if nxt.islower():
        return False
    return not (
        punct.startswith(".")
        and punct.count(".") == 1
        and _is_abbreviation(text, match.start(), nxt)
    )


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text[start:end]``, in order, without surrounding space.

    Every non-whitespace character of the range lies in exactly one span.
    """
    stop = len(text) if end is None else end
    spans: list[tuple[int, int]] = []

    def emit(a: int, b: int) -> None:
        a, b = _strip(text, a, b)
        if a < b:
            spans.append((a, b))

    block_start = start
    breaks = [m.start() for m in _HARD_BREAK.finditer(text, start, stop)]
    breaks.append(stop)
    for block_end in breaks:
        piece_start = block_start
        for match in _END.finditer(text, block_start, block_end):
            if _ends_here(text, match):
                emit(piece_start, match.end())
                piece_start = match.end()
        emit(piece_start, block_end)
        block_start = block_end
    return spans
