"""Chunkers against the real MiniLM tokenizer: exact offsets, coverage, limits, structure."""

from __future__ import annotations

import base64
import functools
import itertools
import os
import pickle
import random
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vectorstream.chunking as chunking
from _chunking_support import check_chunks, count_tokens, minilm_tokenizer, minilm_tokenizer_path
from vectorstream.chunking import (
    Chunker,
    ChunkerFactory,
    ChunkOptions,
    load_tokenizer,
    make_chunker,
    split_sentences,
)
from vectorstream.errors import ChunkingError, ConfigError, ModelError
from vectorstream.types import Chunk, Section

# --- fixtures ------------------------------------------------------------------------------------


@functools.cache
def _bpe_tok() -> tokenizers.Tokenizer:
    """A byte-level BPE tokenizer trained here: a word's token depends on the space before it, so
    the chunkers cannot trust span counts and must re-tokenize (the other code path)."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    rng = random.Random(7)
    words = ["stream", "vector", "chunk", "token", "model", "the", "of", "and", "data", "index"]
    corpus = [" ".join(rng.choice(words) for _ in range(40)) + "." for _ in range(200)]
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _chunks(chunker: Chunker, sections: list[Section]) -> list[Chunk]:
    return list(chunker.chunk(sections))


def _topic_embed(texts: list[str]) -> np.ndarray:
    """A deterministic fake model (a protocol seam): one dimension per topic, counting its words."""
    topics = [
        {"cat", "cats", "dog", "dogs", "pet", "pets", "purr"},
        {"stock", "stocks", "market", "price", "shares"},
    ]
    rows = []
    for text in texts:
        words = re.findall(r"[a-z]+", text.lower())
        rows.append([sum(w in topic for w in words) for topic in topics] + [0.01])
    return np.asarray(rows, dtype=np.float32)


def _letter_embed(texts: list[str]) -> np.ndarray:
    """A deterministic fake model for property tests: letter frequencies."""
    out = np.zeros((len(texts), 27), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
        out[i, 26] = 1.0
    return out


tok = minilm_tokenizer()


# --- property tests: the contract, for every splitter --------------------------------------------

FRAGMENTS = [
    "Hello world.",
    "Dr. Smith met Mr. Jones at 3.14 p.m.",
    "e.g. this",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "# Title\n",
    "## Sub heading\n",
    "```\ncode # not a heading\n\nmore\n```\n",
    "- item\n",
    "1. first\n",
    "中文字符。",
    "😀",
    "héllo wörld",
    "\x00",
    "\u200b",
    "...",
    "!",
    "?",
    "unaffable",
    "supercalifragilisticexpialidocious",
    "a" * 150,
    "x,y;z",
    "The quick brown fox jumps over the lazy dog. ",
]
_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=40).map(
    "".join
)


def _placed(texts: list[str], shared: bool) -> list[Section]:
    """Sections of one document as the parser registry makes them: each starts where the one
    before ends; with ``shared`` metadata consecutive sections may share a chunk."""
    out: list[Section] = []
    at = 0
    for i, t in enumerate(texts):
        out.append(
            Section(
                t,
                "mem://doc",
                index=i,
                page=i + 1,
                headings=("Doc",) if i % 2 else (),
                metadata={"i": 0 if shared else i},
                start=at,
            )
        )
        at += len(t)
    return out


_sections = st.builds(_placed, st.lists(_text, min_size=1, max_size=3), st.booleans())
# A deeper run: VECTORSTREAM_TEST_EXAMPLES=500 pytest tests/test_chunking.py
_EXAMPLES = int(os.environ.get("VECTORSTREAM_TEST_EXAMPLES", "40"))
_PROPS = settings(
    max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_PROPS
@given(sections=_sections, size=st.integers(4, 40), data=st.data())
def test_token_windows_contract(sections: list[Section], size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    chunker = make_chunker(ChunkOptions("tokens", size, overlap), tok, 256)
    check_chunks(sections, _chunks(chunker, sections), tok, size, may_overlap=overlap > 0)


@_PROPS
@given(sections=_sections, size=st.integers(4, 40), data=st.data())
def test_sentence_packing_contract(sections: list[Section], size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    chunker = make_chunker(ChunkOptions("sentences", size, overlap), tok, 256)
    check_chunks(sections, _chunks(chunker, sections), tok, size, may_overlap=overlap > 0)


@_PROPS
@given(sections=_sections, size=st.integers(4, 40))
def test_markdown_contract(sections: list[Section], size: int) -> None:
    chunker = make_chunker(ChunkOptions("markdown", size, 0), tok, 256)
    check_chunks(sections, _chunks(chunker, sections), tok, size, may_overlap=False)


@_PROPS
@given(
    sections=_sections, size=st.integers(4, 40), threshold=st.one_of(st.none(), st.floats(-1, 1))
)
def test_semantic_contract(sections: list[Section], size: int, threshold: float | None) -> None:
    options = ChunkOptions("semantic", size, 0, semantic_threshold=threshold)
    chunker = make_chunker(options, tok, 256, embed=_letter_embed)
    check_chunks(sections, _chunks(chunker, sections), tok, size, may_overlap=False)


@settings(max_examples=max(1, _EXAMPLES * 5 // 8), deadline=None)
@given(sections=_sections, size=st.integers(4, 30), splitter=st.sampled_from(chunking.SPLITTERS))
def test_contract_with_a_context_dependent_tokenizer(
    sections: list[Section], size: int, splitter: str
) -> None:
    chunker = make_chunker(
        ChunkOptions(splitter, size, size // 4), _bpe_tok(), 512, embed=_letter_embed
    )
    check_chunks(
        sections,
        _chunks(chunker, sections),
        _bpe_tok(),
        size,
        may_overlap=splitter in ("tokens", "sentences"),
    )


# --- token windows -------------------------------------------------------------------------------


def _prose(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "model",
        "vector",
        "stream",
        "chunk",
        "token",
        "index",
        "store",
        "search",
        "query",
        "page",
        "data",
        "fast",
    ]
    return " ".join(
        " ".join(rng.choice(words) for _ in range(rng.randint(4, 18))).capitalize() + "."
        for _ in range(n_sentences)
    )


def test_token_windows_overlap_and_do_not_cut_words() -> None:
    text = _prose(80)
    chunks = _chunks(make_chunker(ChunkOptions("tokens", 32, 8), tok, 256), [Section(text, "s")])
    assert len(chunks) > 10
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start < prev.end  # they overlap ...
        shared = text[nxt.start : prev.end]
        assert 1 <= count_tokens(tok, shared) <= 8  # ... by at most `overlap` tokens
    for c in chunks:
        assert c.start == 0 or text[c.start - 1].isspace()
        assert c.end == len(text) or text[c.end].isspace()
        assert c.n_tokens is not None and c.n_tokens >= 24  # a snap moves back at most a quarter


def test_limit_is_capped_by_the_model_not_the_shipped_truncation() -> None:
    raw = tokenizers.Tokenizer.from_file(str(minilm_tokenizer_path()))  # truncates at 128
    chunker = make_chunker(ChunkOptions("tokens", 1000, 0), raw, 256)
    chunks = _chunks(chunker, [Section(_prose(200), "s")])
    sizes = [c.n_tokens or 0 for c in chunks]
    assert max(sizes) <= 254 and max(sizes) > 200  # min(1000, 256 - 2 special tokens)
    assert raw.truncation is not None  # the caller's tokenizer is left as it was


def test_word_without_spaces_is_cut_by_characters() -> None:
    # 200 KB of one "word": the tokenizer sees a single unknown token; chunks stay bounded.
    text = "a" * 200_000
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 64, 0), tok, 256), [Section(text, "s")])
    check_chunks([Section(text, "s")], chunks, tok, 64, may_overlap=False)
    assert len(chunks) == -(-len(text) // (64 * chunking.MAX_CHARS_PER_TOKEN))


@pytest.mark.parametrize("splitter", ["tokens", "sentences", "markdown"])
def test_base64_blob(splitter: str) -> None:
    text = base64.b64encode(random.Random(1).randbytes(30_000)).decode()
    section = Section(text, "s")
    chunks = _chunks(make_chunker(ChunkOptions(splitter, 128, 16), tok, 256), [section])
    check_chunks([section], chunks, tok, 128, may_overlap=splitter != "markdown")


# --- sentences -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Mr. Smith went to Washington. He paid $3.50 there.",
            ["Mr. Smith went to Washington.", "He paid $3.50 there."],
        ),
        (
            "See Fig. 3 and e.g. the appendix. Then stop.",
            ["See Fig. 3 and e.g. the appendix.", "Then stop."],
        ),
        (
            "The U.S. Army is large. J. R. R. Tolkien wrote books.",
            ["The U.S. Army is large.", "J. R. R. Tolkien wrote books."],
        ),
        (
            "Pi is 3.14159 roughly. Yes!Really? Ok.",
            ["Pi is 3.14159 roughly.", "Yes!Really?", "Ok."],
        ),
        ('Wait... what? "Quoted." Next one.', ["Wait... what?", '"Quoted."', "Next one."]),
        (
            "It costs approx. ten euros. Item No. 5 is sold. I said no. Then left.",
            ["It costs approx. ten euros.", "Item No. 5 is sold.", "I said no.", "Then left."],
        ),
        (
            "a line\nwrapped in the middle. Next\n\nNew paragraph",
            ["a line\nwrapped in the middle.", "Next", "New paragraph"],
        ),
        ("Items:\n- one\n- two\n1. three", ["Items:", "- one", "- two", "1. three"]),
        ("第一句。第二句！第三句？", ["第一句。", "第二句！", "第三句？"]),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert [text[a:b] for a, b in split_sentences(text)] == expected


def test_sentence_packing_keeps_sentences_whole() -> None:
    text = _prose(60, seed=3)
    sentences = {text[a:b] for a, b in split_sentences(text)}
    chunks = _chunks(make_chunker(ChunkOptions("sentences", 48, 0), tok, 256), [Section(text, "s")])
    for c in chunks:
        parts = [c.text[a:b] for a, b in split_sentences(c.text)]
        assert parts and all(p in sentences for p in parts)
    # Packing, not one sentence per chunk: most chunks hold several.
    assert sum(len(split_sentences(c.text)) > 1 for c in chunks) > len(chunks) // 2


def test_sentence_overlap_carries_whole_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = _chunks(
        make_chunker(ChunkOptions("sentences", 40, 12), tok, 256), [Section(text, "s")]
    )
    for prev, nxt in itertools.pairwise(chunks):
        shared = text[nxt.start : prev.end]
        assert shared and shared.endswith("is here.") and shared.startswith("Sentence")


def test_long_sentence_falls_back_to_token_windows() -> None:
    text = "Short one. " + " ".join(["word"] * 300) + ". Tail."
    chunks = _chunks(make_chunker(ChunkOptions("sentences", 50, 0), tok, 256), [Section(text, "s")])
    assert chunks[0].text.startswith("Short one.")
    assert all((c.n_tokens or 0) <= 50 for c in chunks)
    assert chunks[-1].text.endswith("Tail.")


# --- markdown ------------------------------------------------------------------------------------

MARKDOWN = """# Guide

Intro text for the guide.

## Install

Run the installer.

```python
# a comment, not a heading

print("hi")
```

### Linux

Use the package manager.

Setext Title
------------

Under setext.

# Appendix

The end.
"""


def test_markdown_heading_paths() -> None:
    # A budget too small for two sections together: each heading starts a chunk.
    section = Section(MARKDOWN, "doc.md", page=1, headings=("Manual",))
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 12, 0), tok, 256), [section])
    check_chunks([section], chunks, tok, 12, may_overlap=False)
    by_text = {
        c.text.splitlines()[0]: c.headings
        for c in chunks
        if c.text.startswith(("#", "Setext")) and "a comment" not in c.text
    }
    assert by_text == {
        "# Guide": ("Manual", "Guide"),
        "## Install": ("Manual", "Guide", "Install"),
        "### Linux": ("Manual", "Guide", "Install", "Linux"),
        "Setext Title": ("Manual", "Guide", "Setext Title"),
        "# Appendix": ("Manual", "Appendix"),
    }
    # A "#" line inside fenced code is not a heading.
    code = [c for c in chunks if "a comment" in c.text or "print(" in c.text]
    assert code and all(c.headings == ("Manual", "Guide", "Install") for c in code)


def test_markdown_small_sections_join_up_to_the_budget() -> None:
    section = Section(MARKDOWN, "doc.md", headings=("Manual",))
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 200, 0), tok, 256), [section])
    # The whole document fits the budget: one chunk, with the path of its first heading.
    assert [c.text for c in chunks] == [MARKDOWN.strip()]
    assert chunks[0].headings == ("Manual", "Guide")


def test_markdown_joins_siblings_not_a_sibling_and_part_of_the_next_section() -> None:
    # Three short sections, then one too long to join whole: the short ones share a chunk,
    # the long one is cut in even parts of its own.
    short = "\n\n".join(f"## Short {i}\n\nA brief note number {i}." for i in range(3))
    long = "## Long\n\n" + _prose(30, seed=3)
    text = f"# Doc\n\n{short}\n\n{long}\n"
    section = Section(text, "doc.md")
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 64, 0), tok, 256), [section])
    check_chunks([section], chunks, tok, 64, may_overlap=False)
    assert chunks[0].text.startswith("# Doc") and chunks[0].text.endswith("number 2.")
    rest = chunks[1:]
    assert rest[0].text.startswith("## Long") and all(c.headings[-1] == "Long" for c in rest)
    sizes = [c.n_tokens or 0 for c in rest]
    assert min(sizes) >= 64 // 4, sizes  # no small rest: the long section's parts are even


def test_markdown_does_not_repeat_the_sections_own_heading() -> None:
    section = Section(
        "## Install\n\nRun it.\n\n### Linux\n\nApt.", "d", headings=("Guide", "Install")
    )
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 6, 0), tok, 256), [section])
    assert [c.headings for c in chunks] == [("Guide", "Install"), ("Guide", "Install", "Linux")]
    merged = _chunks(make_chunker(ChunkOptions("markdown", 200, 0), tok, 256), [section])
    assert [c.headings for c in merged] == [("Guide", "Install")]


def test_markdown_packs_small_paragraphs_and_splits_large_ones() -> None:
    small = "\n\n".join(f"Paragraph {i} is short." for i in range(30))
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 64, 0), tok, 256), [Section(small, "s")])
    assert 3 <= len(chunks) < 30
    assert all("\n\n" in c.text for c in chunks[:-1])  # neighbours packed together
    big = "# Big\n\n" + _prose(40, seed=5)
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 64, 0), tok, 256), [Section(big, "s")])
    assert len(chunks) > 5
    assert chunks[0].text.startswith("# Big\n\n")  # the heading packs with the first sentences
    assert all(c.text.endswith(".") for c in chunks)  # cut between sentences, not inside


# --- semantic ------------------------------------------------------------------------------------

PETS = [
    "My cat likes to purr.",
    "The dog is a loyal pet.",
    "Cats and dogs make good pets.",
    "A pet needs care.",
]
MARKET = [
    "The stock market fell today.",
    "Shares lost value.",
    "The price of stocks dropped.",
    "The market may recover.",
]


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_semantic_splits_exactly_at_the_topic_change(threshold: float | None) -> None:
    text = " ".join(PETS + MARKET)
    chunker = make_chunker(
        ChunkOptions("semantic", 256, 0, threshold), tok, 256, embed=_topic_embed
    )
    chunks = _chunks(chunker, [Section(text, "s")])
    assert [c.text for c in chunks] == [" ".join(PETS), " ".join(MARKET)]


def test_semantic_groups_respect_the_limit() -> None:
    text = " ".join(PETS * 10)
    chunker = make_chunker(ChunkOptions("semantic", 40, 0), tok, 256, embed=_topic_embed)
    chunks = _chunks(chunker, [Section(text, "s")])
    check_chunks([Section(text, "s")], chunks, tok, 40, may_overlap=False)
    assert len(chunks) > 1


def test_semantic_embed_failures_are_chunking_errors() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    def wrong_shape(texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts) + 1, 3))

    def not_finite(texts: list[str]) -> np.ndarray:
        return np.full((len(texts), 3), np.nan)

    section = Section(" ".join(PETS), "s")
    for embed, message in [
        (broken, "model exploded"),
        (wrong_shape, "one finite vector per sentence"),
        (not_finite, "one finite vector per sentence"),
    ]:
        chunker = make_chunker(ChunkOptions("semantic"), tok, 256, embed=embed)
        with pytest.raises(ChunkingError, match=message):
            _chunks(chunker, [section])


# --- sections, sources, pickling -----------------------------------------------------------------


def test_pages_indices_and_metadata_come_from_sections() -> None:
    sections = [
        Section(_prose(20, seed=i), "file.pdf", index=i, page=i + 1, metadata={"lang": "en"})
        for i in range(3)
    ]
    blank = Section("   \n", "file.pdf", index=3, page=4)
    image = Section("", "file.pdf", index=4, page=5, image=b"\x89PNG")
    last = Section("Last page.", "file.pdf", index=5, page=6)
    chunks = _chunks(
        make_chunker(ChunkOptions("markdown", 48, 0), tok, 256), [*sections, blank, image, last]
    )
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2, 3, 6}
    assert all(c.page == c.section_index + 1 for c in chunks)
    assert chunks[-1].text == "Last page." and chunks[-1].section_index == 5
    assert all(dict(c.metadata) == {"lang": "en"} for c in chunks if c.section_index < 3)


def test_one_source_per_call() -> None:
    chunker = make_chunker(ChunkOptions(), tok, 256)
    with pytest.raises(ChunkingError, match="one source"):
        _chunks(chunker, [Section("A.", "a"), Section("B.", "b", index=1)])


@pytest.mark.parametrize("splitter", chunking.SPLITTERS)
def test_chunkers_pickle(splitter: str) -> None:
    embed = _letter_embed if splitter == "semantic" else None
    chunker = make_chunker(ChunkOptions(splitter, 48, 8), tok, 256, embed=embed)
    assert isinstance(chunker, Chunker)
    copy = pickle.loads(pickle.dumps(chunker))
    section = Section(MARKDOWN + _prose(30), "s")
    assert _chunks(copy, [section]) == _chunks(chunker, [section])


# --- options and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splitter": "words"}, "unknown splitter"),
        ({"chunk_tokens": 0}, "positive"),
        ({"chunk_tokens": 12.5}, "integer"),
        ({"chunk_tokens": True}, "integer"),
        ({"overlap": -1}, "zero or positive"),
        ({"chunk_tokens": 32, "overlap": 32}, "smaller than chunk_tokens"),
        ({"semantic_threshold": 1.5}, r"\[-1, 1\]"),
        ({"semantic_threshold": float("nan")}, r"\[-1, 1\]"),
        ({"semantic_threshold": "high"}, "number"),
    ],
)
def test_option_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ChunkingError, match=message):
        ChunkOptions(**kwargs)  # type: ignore[arg-type]


def test_make_chunker_validation() -> None:
    with pytest.raises(ChunkingError, match="embed function"):
        make_chunker(ChunkOptions("semantic"), tok, 256)
    with pytest.raises(ChunkingError, match="lower --overlap"):
        make_chunker(ChunkOptions("tokens", 512, 200), tok, 128)  # limit 126 <= overlap
    with pytest.raises(ChunkingError, match="no room"):
        make_chunker(ChunkOptions(), tok, 2)
    assert chunking.effective_limit(ChunkOptions(chunk_tokens=512), 256) == 254


def test_bad_chunking_options_are_config_errors() -> None:
    """One category for bad options: the CLI exits 2 and the service answers 400 for these."""
    with pytest.raises(ConfigError, match="unknown splitter"):
        ChunkOptions(splitter="foo")
    with pytest.raises(ConfigError, match="lower --overlap"):
        make_chunker(ChunkOptions("tokens", 512, 200), tok, 128)


def test_make_chunker_is_a_chunker_factory() -> None:
    assert isinstance(make_chunker, ChunkerFactory)
    chunker = make_chunker(ChunkOptions("tokens", 64, 8), tok, 128, num_special_tokens=2)
    assert isinstance(chunker, Chunker)


def test_load_tokenizer(tmp_path: object) -> None:
    path = minilm_tokenizer_path()
    for where in (path, path.parent):
        tokenizer = load_tokenizer(where)
        assert tokenizer.truncation is None and tokenizer.padding is None
        assert count_tokens(tokenizer, _prose(40)) > 128
    with pytest.raises(ModelError, match="cannot load tokenizer"):
        load_tokenizer(path.parent / "missing.json")


def test_public_names() -> None:
    public = {n for n in dir(chunking) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(chunking, n)).__name__ == "module"}
    assert public - modules == set(chunking.__all__)


# --- tokenizing in blocks ------------------------------------------------------------------------


@_PROPS
@given(
    text=st.one_of(_text, st.text(alphabet='aZ09+/=._-,("é\u0301\x1f \n', max_size=300)),
    block=st.integers(1, 64),
)
def test_block_tokenizing_matches_one_pass(text: str, block: int) -> None:
    from vectorstream.chunking._tokens import SectionTokens

    whole = SectionTokens.encode(tok, text, block_chars=10**9)
    for punct_cuts in (False, True):
        blocks = SectionTokens.encode(tok, text, block_chars=block, punct_cuts=punct_cuts)
        assert (blocks.starts, blocks.ends, blocks.word_start) == (
            whole.starts,
            whole.ends,
            whole.word_start,
        )


@pytest.mark.parametrize("splitter", ["tokens", "markdown"])
def test_long_section_is_tokenized_in_blocks(splitter: str) -> None:
    text = "\n\n".join(f"## Part {i}\n\n{_prose(12, seed=i)}" for i in range(120))
    assert len(text) > 2 * chunking._tokens.BLOCK_CHARS
    section = Section(text, "s")
    chunks = _chunks(make_chunker(ChunkOptions(splitter, 100, 10), tok, 256), [section])
    check_chunks([section], chunks, tok, 100, may_overlap=splitter == "tokens")


# --- tokenizer handling, threads, the real markdown parser ----------------------------------------


def test_context_free_detection() -> None:
    from vectorstream.chunking._tokens import cuts_are_context_free

    assert cuts_are_context_free(tok)  # WordPiece + BertPreTokenizer + BertNormalizer
    assert not cuts_are_context_free(
        _bpe_tok()
    )  # byte-level BPE: a word's tokens depend on its space
    seq = tokenizers.Tokenizer.from_str(tok.to_str())
    seq.normalizer = tokenizers.normalizers.Sequence(
        [tokenizers.normalizers.NFD(), tokenizers.normalizers.Lowercase()]
    )
    assert cuts_are_context_free(seq)
    seq.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    assert not cuts_are_context_free(seq)


def test_chunk_is_safe_from_many_threads() -> None:
    # The HTTP server shares one chunker between requests.
    from concurrent.futures import ThreadPoolExecutor

    chunker = make_chunker(ChunkOptions("markdown", 40, 0), tok, 256)
    docs = [[Section(MARKDOWN + _prose(15, seed=i), f"doc{i}")] for i in range(8)]
    expected = [_chunks(chunker, d) for d in docs]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda d: _chunks(chunker, d), docs)) == expected


def test_sections_from_the_markdown_parser() -> None:
    from vectorstream.parsers import parse
    from vectorstream.types import Source

    source = Source("mem://guide.md", text=MARKDOWN * 3, media_type="text/markdown")
    sections = list(parse(source, format="markdown"))
    assert len(sections) > 3
    chunks = _chunks(make_chunker(ChunkOptions("markdown", 64, 0), tok, 256), sections)
    check_chunks(sections, chunks, tok, 64, may_overlap=False)
    for c in chunks:
        # The parser starts a section with its heading line: the path must not repeat it.
        assert len(set(c.headings)) == len(c.headings), c.headings
        assert c.headings == sections[c.section_index].headings


# --- megabyte sections (slow) --------------------------------------------------------------------


def _megabyte_inputs() -> dict[str, str]:
    rng = random.Random(11)
    prose = "\n\n".join(_prose(8, seed=i) for i in range(1400))[:1_000_000]
    markdown = "\n\n".join(
        f"{'#' * (1 + i % 3)} Part {i}\n\n{_prose(6, seed=i)}\n\n```python\n# step {i}\nx = {i}\n```"
        for i in range(1600)
    )[:1_000_000]
    return {
        "prose": prose,
        "markdown": markdown,
        "letters": "".join(rng.choice("abcdefghij") for _ in range(1_000_000)),
        "base64": base64.b64encode(rng.randbytes(750_000)).decode(),
    }


@pytest.mark.slow
@pytest.mark.parametrize("splitter", ["tokens", "sentences", "markdown"])
def test_megabyte_sections(splitter: str) -> None:
    chunker = make_chunker(ChunkOptions(splitter, 256, 32), tok, 256)
    for name, text in _megabyte_inputs().items():
        section = Section(text, name)
        chunks = _chunks(chunker, [section])
        check_chunks([section], chunks, tok, 254, may_overlap=splitter != "markdown")


# --- the default splitter on the sample corpus ---------------------------------------------------


def test_default_chunks_on_the_sample_corpus_are_near_the_budget(tmp_path: Path) -> None:
    """The README's demo corpus with the default splitter: chunks people would choose."""
    from vectorstream.parsers import document_text, parse
    from vectorstream.samples import build_sample_corpus
    from vectorstream.types import Source

    build_sample_corpus(tmp_path, documents=40)
    chunker = make_chunker(ChunkOptions(), tok, 256)
    budget = 254  # MiniLM's 256 positions less [CLS] and [SEP]
    sizes: list[int] = []
    small: list[str] = []
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        sections = list(parse(Source(str(path), path=str(path))))
        document = document_text(sections)
        chunks = list(chunker.chunk(sections))
        for i, chunk in enumerate(chunks):
            n = chunk.n_tokens or 0
            assert document[chunk.start : chunk.end] == chunk.text
            assert 0 < n <= budget
            sizes.append(n)
            if n < budget / 4:
                # Justified only where no neighbour could take it within the budget.
                neighbours = chunks[max(0, i - 1) : i] + chunks[i + 1 : i + 2]
                assert all((c.n_tokens or 0) + n > budget for c in neighbours), (path, chunk)
                small.append(chunk.text)
    assert statistics.median(sizes) >= 0.6 * budget, statistics.median(sizes)
    assert len(small) <= 0.05 * len(sizes), small
