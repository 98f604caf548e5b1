"""Parsers: detection by content, every format's text and structure, broken files, streaming."""

from __future__ import annotations

import codecs
import io
import json
import logging
import pickle
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _parsers_support import (
    BROKEN,
    deep_html,
    make_broken_corpus,
    make_docx,
    make_odd_but_valid,
    make_pdf,
    png_bytes,
)
from vectorstream.errors import ConfigError, ParseError, UnsupportedFormatError
from vectorstream.parsers import (
    DEFAULT_REGISTRY,
    FORMATS,
    DocxParser,
    HtmlParser,
    ImageSectionParser,
    ParseOptions,
    ParserRegistry,
    detect_format,
    parse,
    read_head,
)
from vectorstream.parsers._cut import TextCutter
from vectorstream.sources import from_texts, iter_files
from vectorstream.types import Section, Source


def src(path: Path) -> Source:
    return Source(uri=str(path), path=str(path))


def sections(path: Path, options: ParseOptions = ParseOptions(), **kw: object) -> list[Section]:
    warnings: list[str] = kw.pop("warnings", [])  # type: ignore[assignment]
    return list(parse(src(path), options, warnings.append, **kw))  # type: ignore[arg-type]


def joined(secs: list[Section]) -> str:
    return "".join(s.text for s in secs)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.txt", b"plain words\n", "text"),
        ("README", b"plain words\n", "text"),
        ("a.md", b"# Title\n", "markdown"),
        ("a.html", b"<p>x</p>", "html"),
        ("page.pdf", b"<!DOCTYPE html><html><body>x</body></html>", "html"),
        ("page.bin", b"  <!-- c --><html><body>x</body></html>", "html"),
        ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "pdf"),
        ("noext", b"%PDF-1.4\n", "pdf"),
        ("d.csv", b"a,b\n1,2\n", "csv"),
        ("d.jsonl", b'{"a": 1}\n', "jsonl"),
        ("x.py", b"print(1)\n", "code"),
        ("tool", b"#!/usr/bin/env python3\nprint(1)\n", "code"),
        ("Makefile", b"all:\n\techo hi\n", "code"),
        ("pic.png", png_bytes(), "image"),
        ("pic.txt", png_bytes(), "image"),
        ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image"),
        ("junk.txt", bytes(range(256)) * 4, "binary"),
        ("fake.docx", b"\x00\x01\x02\x03binary\x00", "binary"),
        ("utf16.txt", "hello there".encode("utf-16"), "text"),
        ("utf16le.txt", "hello there, no BOM".encode("utf-16-le"), "text"),
        ("empty.txt", b"", "text"),
        ("lib.so", b"\x7fELF\x02\x01\x01\x00", "binary"),
    ],
)
def test_detect_format_by_content_and_name(name: str, content: bytes, expected: str) -> None:
    source = Source(uri=f"/x/{name}", path=f"/x/{name}")
    assert detect_format(source, content) == expected


def test_detect_format_docx_by_zip_content(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "renamed.bin", [("p", "hello")])
    assert detect_format(src(path), read_head(src(path))) == "docx"


def test_detect_format_in_memory_text_and_media_type() -> None:
    assert detect_format(Source(uri="text:0", text="just words"), b"just words") == "text"
    md = Source(uri="text:1", text="# H\nbody", media_type="text/markdown")
    assert detect_format(md, b"# H\nbody") == "markdown"
    html = Source(uri="text:2", text="<html><body>x</body></html>")
    assert detect_format(html, html.text.encode()) == "html"  # type: ignore[union-attr]
    assert set(FORMATS) >= {"text", "markdown", "html", "pdf", "docx", "csv", "jsonl", "code"}


# --------------------------------------------------------------------------- plain text


def test_text_round_trips_and_cuts_at_paragraphs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} " + "word " * (i % 17 + 3) for i in range(400)]
    text = "\n\n".join(paragraphs) + "\n"
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    secs = sections(path, ParseOptions(max_section_chars=1000))
    assert joined(secs) == text
    assert len(secs) > 5
    assert [s.index for s in secs] == list(range(len(secs)))
    assert all(len(s.text) <= 1000 for s in secs)
    # Every cut but the last falls just after a paragraph break.
    assert all(s.text.endswith("\n\n") for s in secs[:-1])
    assert all(s.metadata["format"] == "text" and s.source == str(path) for s in secs)


def test_crlf_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "dos.txt"
    path.write_bytes(b"line one\r\nline two\r\n\r\nline three\rend")
    assert joined(sections(path)) == "line one\nline two\n\nline three\nend"


def test_five_megabyte_line_without_spaces_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "line.txt"
    line = "abcdefghij" * 500_000
    path.write_text(line)
    secs = sections(path, ParseOptions(max_section_chars=100_000))
    assert len(secs) == 50
    assert all(len(s.text) == 100_000 for s in secs)
    assert joined(secs) == line


def test_empty_and_blank_files_give_no_sections(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("\n\n   \n\t\n")
    assert sections(tmp_path / "empty.txt") == []
    assert sections(tmp_path / "blank.md") == []


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_bom_encodings(tmp_path: Path, codec: str) -> None:
    text = "Grüße, 東京, emoji 🎉 and plain ASCII.\nSecond line.\n"
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    path = tmp_path / f"{codec}.txt"
    path.write_bytes(data)
    warnings: list[str] = []
    assert joined(sections(path, warnings=warnings)) == text
    assert warnings == []


def test_invalid_utf8_is_replaced_and_reported_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes("Grüße aus Köln, ".encode() + b"\xff\xfe\xc3" + b" weiter.\n")
    warnings: list[str] = []
    secs = sections(path, warnings=warnings)
    assert joined(secs) == "Grüße aus Köln, \ufffd\ufffd\ufffd weiter.\n"
    assert len(warnings) == 1
    assert "3 undecodable byte(s)" in warnings[0] and str(path) in warnings[0]


def test_legacy_encoding_detected_and_forced(tmp_path: Path) -> None:
    text = (
        "Le café est très chaud, la crème brûlée est délicieuse. Où est la bibliothèque? "
        "Je préfère le thé à la française, avec des gâteaux élégants. "
    ) * 5
    path = tmp_path / "latin1.txt"
    path.write_bytes(text.encode("latin-1"))
    assert joined(sections(path)) == text
    assert joined(sections(path, ParseOptions(encoding="latin-1"))) == text


def test_mostly_undecodable_bytes_are_not_text(tmp_path: Path) -> None:
    path = tmp_path / "forced.txt"
    # Cyrillic windows-1251 read with a forced, wrong encoding: most bytes fail to decode.
    path.write_bytes(("это не текст " * 50).encode("cp1251"))
    with pytest.raises(
        ParseError,
        match=r"forced\.txt: not text: [\d,]+ of the first [\d,]+ bytes do not decode as utf-8",
    ):
        sections(path, ParseOptions(encoding="utf-8"))
    assert "это не текст" in joined(sections(path, ParseOptions(encoding="cp1251")))


def test_legacy_encoding_after_an_ascii_preamble(tmp_path: Path) -> None:
    text = "Plain ASCII preamble line.\n" * 700 + "Ensuite: déjà vu, très élégant, où ça?\n" * 20
    path = tmp_path / "late.txt"
    path.write_bytes(text.encode("cp1252"))
    warnings: list[str] = []
    assert joined(sections(path, warnings=warnings)) == text
    assert warnings == []


def test_warnings_are_logged_without_a_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes("ok ü ".encode() + b"\xff")
    with caplog.at_level(logging.WARNING, logger="vectorstream.parsers"):
        list(parse(src(path)))
    assert any("1 undecodable byte(s)" in r.getMessage() for r in caplog.records)


def test_in_memory_text_sources() -> None:
    text = "first paragraph\n\nsecond paragraph\n"
    (source,) = from_texts([text])
    secs = list(parse(source))
    assert joined(secs) == text
    assert secs[0].source == "text:0"


def test_text_parsing_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    line = "a sentence of ordinary prose that goes on for a while. " * 2 + "\n"
    with path.open("w") as fh:
        for _ in range(40_000):  # ~4.5 MB
            fh.write(line)
    tracemalloc.start()
    try:
        count = 0
        for section in parse(src(path), ParseOptions(max_section_chars=20_000)):
            count += len(section.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == path.stat().st_size
    # The whole file is ~4.5 MB; streaming holds a few 64 KiB pieces and one section.
    assert peak < 1_500_000, peak


# --------------------------------------------------------------------------- markdown


MARKDOWN = """\
---
title: front matter
---
Intro before any heading.

# Guide

Welcome text.

## Install

Run the installer.

```bash
# not a heading, a shell comment
pip install thing
```

## Use ##

Setext Part
===========

Body of the setext part.

Sub part
--------

- a list item
- another

### Deep

Deep text.
"""


def test_markdown_headings_split_sections_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN)
    secs = sections(path)
    assert joined(secs) == MARKDOWN
    by_path = {s.headings: s.text for s in secs}
    assert list(by_path) == [
        (),
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Use"),
        ("Setext Part",),
        ("Setext Part", "Sub part"),
        ("Setext Part", "Sub part", "Deep"),
    ]
    assert "# not a heading" in by_path[("Guide", "Install")]
    assert by_path[("Setext Part", "Sub part", "Deep")].startswith("### Deep")
    assert all(s.metadata["format"] == "markdown" for s in secs)


def test_markdown_long_section_is_cut_and_keeps_its_headings(tmp_path: Path) -> None:
    path = tmp_path / "long.md"
    body = "".join(f"Line {i} of a very long section.\n" for i in range(3000))
    path.write_text("# Only\n" + body)
    secs = sections(path, ParseOptions(max_section_chars=5000))
    assert len(secs) > 10
    assert all(s.headings == ("Only",) and len(s.text) <= 5000 for s in secs)
    assert joined(secs) == "# Only\n" + body


# --------------------------------------------------------------------------- HTML


HTML = """<!DOCTYPE html>
<html><head><title>The  Page</title><style>body { color: red }</style>
<script>var secret = "script text";</script></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About nav link</a></nav>
<header>Site banner</header>
<h1>Main Title</h1>
<p>First <b>bold</b> paragraph
   spread over lines.</p>
<div role="navigation">role nav</div>
<h2>Details</h2>
<ul><li>item one</li><li>item two</li></ul>
<table><tr><th>name</th><th>value</th></tr><tr><td>alpha</td><td>1</td></tr></table>
<pre>keep
  this   layout</pre>
<noscript>enable js</noscript>
<footer>copyright footer</footer>
</body></html>
"""


def test_html_main_text_without_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(HTML)
    secs = sections(path)
    text = joined(secs)
    for kept in ("Main Title", "First bold paragraph spread over lines.", "item one", "item two"):
        assert kept in text
    assert "name | value" in text and "alpha | 1" in text
    assert "keep\n  this   layout" in text
    for dropped in (
        "script text",
        "color: red",
        "About nav link",
        "Site banner",
        "role nav",
        "enable js",
        "copyright footer",
    ):
        assert dropped not in text
    assert [s.headings for s in secs] == [("Main Title",), ("Main Title", "Details")]
    assert all(s.metadata["title"] == "The Page" for s in secs)


def test_html_deeply_nested_does_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.html"
    path.write_text(deep_html(5000))
    assert joined(sections(path)).strip() == "deep text"


def test_html_nesting_limit(tmp_path: Path) -> None:
    path = tmp_path / "bold.html"
    # Unclosed formatting elements nest too (the parser keeps them open).
    path.write_text("<p>" + "<b>" * 12_000 + "very bold")
    with pytest.raises(ParseError, match="nested more than 10,000 elements deep"):
        sections(path)
    # Elements whose end tag is implied do not count: a long flat list is fine.
    flat = tmp_path / "flat.html"
    flat.write_text("<ul>" + "<li>item" * 20_000 + "</ul>")
    assert joined(sections(flat)).count("item") == 20_000
    registry = DEFAULT_REGISTRY.with_parser("html", HtmlParser(max_depth=20_000))
    assert "very bold" in joined(list(parse(src(path), registry=registry)))


def test_html_declared_charset(tmp_path: Path) -> None:
    path = tmp_path / "old.html"
    path.write_bytes(
        b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
        b"</head><body><p>caf\xe9 \x93quoted\x94</p></body></html>"
    )
    assert "café “quoted”" in joined(sections(path))


def test_html_named_pdf_is_parsed_as_html(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_text("<!doctype html><html><body><p>Really a web page.</p></body></html>")
    secs = sections(path)
    assert joined(secs).strip() == "Really a web page."
    assert secs[0].metadata["format"] == "html"


# --------------------------------------------------------------------------- PDF


def test_pdf_pages_and_text(tmp_path: Path) -> None:
    pages = [[f"Page {n} first line", f"Page {n} second line"] for n in range(1, 5)]
    path = make_pdf(tmp_path / "doc.pdf", pages)
    secs = sections(path)
    assert [s.page for s in secs] == [1, 2, 3, 4]
    for section, lines in zip(secs, pages, strict=True):
        assert section.text.split() == " ".join(lines).split()
        assert section.metadata == {"format": "pdf", "pages": 4}


def test_pdf_outline_gives_heading_paths(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "book.pdf",
        [[f"text of page {n}"] for n in range(1, 7)],
        outline=[(1, 0, "Part A"), (2, 1, "A.1"), (3, 1, "A.2"), (5, 0, "Part B")],
    )
    secs = sections(path)
    assert [(s.page, s.headings) for s in secs] == [
        (1, ()),
        (2, ("Part A",)),
        (3, ("Part A", "A.1")),
        (4, ("Part A", "A.2")),
        (5, ("Part A", "A.2")),
        (6, ("Part B",)),
    ]


def test_pdf_page_without_text_is_skipped_and_reported(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "gap.pdf", [["one"], [], ["three"]])
    warnings: list[str] = []
    secs = sections(path, warnings=warnings)
    assert [s.page for s in secs] == [1, 3]
    assert len(warnings) == 1 and "1 of 3 page(s) have no text layer" in warnings[0]


def test_pdf_from_bytes(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "mem.pdf", [["in memory"]])
    source = Source(uri="mem:1", data=path.read_bytes())
    secs = list(parse(source))
    assert secs[0].text.strip() == "in memory" and secs[0].page == 1


# --------------------------------------------------------------------------- DOCX


def test_docx_headings_paragraphs_tables(tmp_path: Path) -> None:
    path = make_docx(
        tmp_path / "doc.docx",
        [
            ("p", "Preamble paragraph."),
            ("title", "Handbook"),
            ("h1", "Chapter One"),
            ("p", "Chapter one text."),
            ("h2", "Section A"),
            ("p", "Section A text."),
            ("table", [["key", "value"], ["alpha", "1"]]),
            ("h1", "Chapter Two"),
            ("p", "Chapter two text."),
        ],
    )
    secs = sections(path)
    by_path = {s.headings: s.text for s in secs}
    assert list(by_path) == [
        (),
        ("Handbook",),
        ("Handbook", "Chapter One"),
        ("Handbook", "Chapter One", "Section A"),
        ("Handbook", "Chapter Two"),
    ]
    assert "Preamble paragraph." in by_path[()]
    section_a = by_path[("Handbook", "Chapter One", "Section A")]
    assert section_a.startswith("Section A\n")
    assert "Section A text." in section_a and "key | value\nalpha | 1\n" in section_a
    assert "Chapter two text." in by_path[("Handbook", "Chapter Two")]
    assert all(s.metadata["format"] == "docx" for s in secs)


def test_docx_inflation_limit(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "doc.docx", [("p", "words " * 5000)])
    registry = DEFAULT_REGISTRY.with_parser("docx", DocxParser(max_uncompressed_bytes=20_000))
    with pytest.raises(
        ParseError, match=r"DOCX parts would inflate to [\d,]+ bytes, over the 20,000"
    ):
        list(parse(src(path), registry=registry))
    assert "words words" in joined(sections(path))
    # The same document from bytes in memory.
    (section,) = list(parse(Source(uri="mem:docx", data=path.read_bytes())))
    assert section.text.startswith("words words")


# --------------------------------------------------------------------------- CSV / JSONL


def test_csv_rows_auto_text_field_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        'id,Text,lang\n1,hello world,en\n2,"multi\nline, with comma",en\n\n3,bonjour,fr\n'
    )
    secs = sections(path, ParseOptions(metadata_fields=("id", "lang")))
    assert [s.text for s in secs] == ["hello world", "multi\nline, with comma", "bonjour"]
    assert [s.metadata for s in secs] == [
        {"format": "csv", "row": 1, "id": "1", "lang": "en"},
        {"format": "csv", "row": 2, "id": "2", "lang": "en"},
        {"format": "csv", "row": 4, "id": "3", "lang": "fr"},
    ]


def test_csv_explicit_field_render_all_and_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("title;summary\nFirst;the first summary\nSecond;the second summary\n")
    picked = sections(path, ParseOptions(text_field="summary"))
    assert [s.text for s in picked] == ["the first summary", "the second summary"]
    rendered = sections(path)
    assert rendered[0].text == "title: First\nsummary: the first summary\n"


def test_csv_single_column_keeps_commas_in_its_text(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("text\nhello, world\nfoo, bar, baz\n")
    assert [s.text for s in sections(path)] == ["hello, world", "foo, bar, baz"]
    piped = tmp_path / "piped.csv"
    piped.write_text("a|text\n1|x, y; z\n2|w\n")
    assert [s.text for s in sections(piped)] == ["x, y; z", "w"]


def test_tsv_and_missing_column_errors(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("a\tbody\nx\tfirst body\n")
    assert [s.text for s in sections(path)] == ["first body"]
    with pytest.raises(ParseError, match=r"no column 'nope'; columns are: a, body"):
        sections(path, ParseOptions(text_field="nope"))
    with pytest.raises(ParseError, match=r"no column\(s\) 'lang'"):
        sections(path, ParseOptions(metadata_fields=("lang",)))


def test_jsonl_rows_fields_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [
        {"content": "first content", "id": 7, "tags": ["a", "b"]},
        {"title": "no text field", "n": 1},
        "a bare string row",
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n\n")
    warnings: list[str] = []
    secs = sections(path, ParseOptions(metadata_fields=("id", "tags")), warnings=warnings)
    assert [s.text for s in secs] == [
        "first content",
        "title: no text field\nn: 1\n",
        "a bare string row",
    ]
    assert secs[0].metadata == {"format": "jsonl", "row": 1, "id": 7, "tags": '["a", "b"]'}
    assert [s.metadata["row"] for s in secs] == [1, 2, 3]
    assert len(warnings) == 1 and "1 invalid line(s) skipped (line 4" in warnings[0]

    warnings.clear()
    only = sections(path, ParseOptions(text_field="title"), warnings=warnings)
    # A bare JSON string is its own text whatever the field.
    assert [s.text for s in only] == ["no text field", "a bare string row"]
    assert any("1 row(s) without field 'title' skipped" in w for w in warnings)


# --------------------------------------------------------------------------- code


def test_code_language_from_extension_and_shebang(tmp_path: Path) -> None:
    (tmp_path / "mod.rs").write_text("fn main() {}\n")
    (tmp_path / "run").write_text("#!/usr/bin/env python3\nprint('hi')\n")
    rust = sections(tmp_path / "mod.rs")
    script = sections(tmp_path / "run")
    assert rust[0].text == "fn main() {}\n"
    assert rust[0].metadata == {"format": "code", "language": "rust"}
    assert script[0].metadata == {"format": "code", "language": "python"}


# --------------------------------------------------------------------------- broken files


BROKEN_MESSAGES = {
    "truncated_pdf": "not a readable PDF, truncated or corrupt",
    "binary_txt": "binary content, not text",
    "docx_not_zip": "named like a DOCX file but its content is not one",
    "png_image": "needs an image model",
    "random_pdf": "not a readable PDF",
    "truncated_docx": "not a valid DOCX file (not a zip archive, or a truncated one)",
    "jsonl_not_jsonl": "not JSON Lines",
    "too_deep_html": "HTML nested more than 10,000 elements deep",
}


def test_broken_corpus_each_file_reported_and_good_files_still_parse(tmp_path: Path) -> None:
    broken = make_broken_corpus(tmp_path / "corpus")
    odd = make_odd_but_valid(tmp_path / "corpus")
    (tmp_path / "corpus" / "good.md").write_text("# Good\nA good file.\n")
    make_pdf(tmp_path / "corpus" / "good.pdf", [["A good PDF."]])

    # What the pipeline does: parse each source, record failures, go on.
    failures: dict[str, ParseError] = {}
    parsed: dict[str, list[Section]] = {}
    for source in iter_files([tmp_path / "corpus"]):
        try:
            parsed[source.uri] = list(parse(source, on_warning=lambda _m: None))
        except ParseError as exc:
            failures[source.uri] = exc

    assert set(failures) == {str(p) for p in broken.values()}
    for key, path in broken.items():
        message = str(failures[str(path)])
        assert message.startswith(str(path)) and BROKEN_MESSAGES[key] in message, message
        assert pickle.loads(pickle.dumps(failures[str(path)])).args == failures[str(path)].args
    assert isinstance(failures[str(broken["png_image"])], UnsupportedFormatError)
    assert parsed[str(odd["empty"])] == []
    assert joined(parsed[str(odd["long_line"])]) == "x" * 5_000_000
    assert joined(parsed[str(odd["deep_html"])]).strip() == "deep text"
    assert "Served as HTML" in joined(parsed[str(odd["html_named_pdf"])])
    assert "\ufffd" in joined(parsed[str(odd["invalid_utf8"])])
    assert joined(parsed[str(odd["utf16"])]).startswith("Ünïcödé text in UTF-16")
    assert "A good file." in joined(parsed[str(tmp_path / "corpus" / "good.md")])
    assert "A good PDF." in joined(parsed[str(tmp_path / "corpus" / "good.pdf")])
    assert set(BROKEN) == set(broken)


def test_missing_file_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="cannot read"):
        list(parse(src(tmp_path / "gone.txt")))


# --------------------------------------------------------------------------- registry, options


class _ShoutParser:
    """A user parser: upper-cases the file, one section."""

    def parse(self, source: Source, options: ParseOptions, warn: object) -> Iterator[Section]:
        yield Section(
            text=Path(source.path or "").read_text().upper(),
            source="ignored",
            metadata={"shout": True},
        )


class _FailingParser:
    def parse(self, source: Source, options: ParseOptions, warn: object) -> Iterator[Section]:
        yield Section(text="before the failure", source=source.uri)
        raise ValueError("vendor failure")


def test_registry_is_immutable_and_extensible(tmp_path: Path) -> None:
    path = tmp_path / "note.shout"
    path.write_text("quiet words")
    registry = DEFAULT_REGISTRY.with_parser("shout", _ShoutParser(), extensions=(".shout",))
    assert "shout" not in DEFAULT_REGISTRY.formats and "shout" in registry.formats
    (section,) = list(parse(src(path), registry=registry))
    assert section.text == "QUIET WORDS"
    assert section.source == str(path)  # parse() fixes identity and numbering
    assert section.metadata == {"format": "shout", "shout": True}
    assert next(parse(src(path))).metadata["format"] == "text"
    assert isinstance(pickle.loads(pickle.dumps(DEFAULT_REGISTRY)), ParserRegistry)


def test_registry_routes_media_types_and_extensions_on_its_own_instance(tmp_path: Path) -> None:
    shout = DEFAULT_REGISTRY.with_parser(
        "shout", _ShoutParser(), extensions=("SHOUT",), media_types=("Text/X-Shout; charset=utf-8",)
    )
    assert shout.extension_map == {".shout": "shout"}
    assert shout.media_type_map == {"text/x-shout": "shout"}
    path = tmp_path / "note.txt"
    path.write_text("by media type")
    typed = Source(uri=str(path), path=str(path), media_type="text/x-shout")
    (section,) = list(shout.parse(typed))
    assert section.text == "BY MEDIA TYPE" and section.metadata["format"] == "shout"
    # The default registry never learnt anything: it detects by content as before.
    assert next(DEFAULT_REGISTRY.parse(typed)).metadata["format"] == "text"
    # An extension rule wins over a media-type rule.
    both = shout.with_parser("text", _FailingParser(), extensions=(".txt",))
    assert both.detect(typed, b"") == "text"
    # Registries pickle with their rules, for worker processes.
    back = pickle.loads(pickle.dumps(shout))
    assert back.media_type_map == shout.media_type_map and back.key == shout.key
    assert "_ShoutParser" in shout.key and shout.key != DEFAULT_REGISTRY.key


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"extensions": ".x"}, TypeError),
        ({"extensions": ("",)}, ValueError),
        ({"media_types": ("shout",)}, ValueError),
    ],
)
def test_registry_rules_are_checked(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        DEFAULT_REGISTRY.with_parser("shout", _ShoutParser(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no parse"):
        DEFAULT_REGISTRY.with_parser("shout", object())  # type: ignore[arg-type]


def test_vendor_exceptions_are_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("x")
    registry = DEFAULT_REGISTRY.with_parser("text", _FailingParser())
    got = parse(src(path), registry=registry)
    assert next(got).text == "before the failure"
    with pytest.raises(
        ParseError, match="cannot parse as text: ValueError: vendor failure"
    ) as info:
        next(got)
    assert isinstance(info.value.__cause__, ValueError)


def test_unknown_format_lists_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("x")
    with pytest.raises(UnsupportedFormatError, match="known formats: binary, code, csv"):
        list(parse(src(path), format="epub"))


def test_options_validation() -> None:
    with pytest.raises(ConfigError, match="max_section_chars"):
        ParseOptions(max_section_chars=0)
    with pytest.raises(ConfigError, match="unknown text encoding"):
        ParseOptions(encoding="no-such-codec")
    with pytest.raises(ConfigError, match="tuple of names"):
        ParseOptions(metadata_fields="id")  # type: ignore[arg-type]
    assert ParseOptions(metadata_fields=["a"]).metadata_fields == ("a",)  # type: ignore[arg-type]


def test_sections_and_options_pickle(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "p.docx", [("h1", "Head"), ("p", "Body text.")])
    secs = sections(path)
    assert pickle.loads(pickle.dumps(secs)) == secs
    options = ParseOptions(text_field="t", metadata_fields=("a",), max_section_chars=100)
    assert pickle.loads(pickle.dumps(options)) == options


def test_streams_from_a_file_object_source() -> None:
    # Bytes in memory go through the same decoding as files.
    data = io.BytesIO("é".encode("utf-16")).getvalue()
    (section,) = list(parse(Source(uri="mem:u16", data=data)))
    assert section.text == "é"


# --------------------------------------------------------------------------- more edge cases


def test_encrypted_pdf_is_reported(tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    path = tmp_path / "locked.pdf"
    c = canvas.Canvas(str(path), encrypt="secret")
    c.drawString(72, 800, "hidden text")
    c.showPage()
    c.save()
    with pytest.raises(ParseError, match=r"locked\.pdf: encrypted PDF \(needs a password\)"):
        sections(path)


def test_csv_field_over_the_csv_limit_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("id,text\n1,short\n2," + "y" * 200_000 + "\n")
    got = parse(src(path))
    assert next(got).text == "short"
    with pytest.raises(
        ParseError, match="malformed CSV near line 3: field larger than field limit"
    ):
        next(got)


def test_markdown_line_of_megabytes_is_cut_within_its_heading(tmp_path: Path) -> None:
    path = tmp_path / "wide.md"
    text = "# Wide\n" + "z" * 2_500_000 + "\n## Next\nmore\n"
    path.write_text(text)
    secs = sections(path)
    assert [(s.headings, len(s.text)) for s in secs] == [
        (("Wide",), 1_000_000),
        (("Wide",), 1_000_000),
        (("Wide",), 500_008),
        (("Wide", "Next"), 13),
    ]
    assert joined(secs) == text


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text(alphabet=st.sampled_from("ab \n\té"), max_size=300), max_size=20),
    limit=st.integers(min_value=16, max_value=120),
)
def test_cutter_keeps_every_character_and_respects_the_limit(pieces: list[str], limit: int) -> None:
    cutter = TextCutter(limit)
    out: list[str] = []
    for piece in pieces:
        out.extend(cutter.feed(piece))
    out.extend(cutter.flush())
    assert "".join(out) == "".join(pieces)
    assert all(0 < len(p) <= limit for p in out)
    # Every cut but the last keeps at least half a window (cutting stays linear).
    assert all(len(p) >= limit // 2 for p in out[:-1])


@pytest.mark.parametrize("module_name", ["vectorstream.parsers", "vectorstream.sources"])
def test_public_names_equal_all(module_name: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    # Everything this package defines and exposes without an underscore is in __all__ …
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(module_name)
    }
    assert defined_here <= set(module.__all__)
    # … and everything in __all__ exists, listed once.
    assert all(hasattr(module, name) for name in module.__all__)
    assert len(module.__all__) == len(set(module.__all__))


def test_in_memory_content_wins_over_the_path_as_in_fingerprint(tmp_path: Path) -> None:
    from vectorstream.sources import fingerprint

    path = tmp_path / "on-disk.txt"
    path.write_text("the file's words")
    with_text = Source(uri=str(path), path=str(path), text="the caller's words")
    with_data = Source(uri=str(path), path=str(path), data=b"the caller's bytes")
    assert joined(list(parse(with_text))) == "the caller's words"
    assert joined(list(parse(with_data))) == "the caller's bytes"
    assert fingerprint(with_text) == fingerprint(Source(uri="x", text="the caller's words"))
    assert fingerprint(with_data) == fingerprint(Source(uri="x", data=b"the caller's bytes"))


def test_images_become_image_sections_with_an_image_parser(tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(png_bytes(3, 2))
    registry = DEFAULT_REGISTRY.with_parser("image", ImageSectionParser())
    (section,) = list(parse(src(path), registry=registry))
    assert section.image == path.read_bytes() and section.text == ""
    assert section.metadata == {
        "format": "image",
        "media_type": "image/png",
        "bytes": path.stat().st_size,
        "width": 3,
        "height": 2,
    }
    assert pickle.loads(pickle.dumps(section)) == section
    small = DEFAULT_REGISTRY.with_parser("image", ImageSectionParser(max_bytes=10))
    with pytest.raises(ParseError, match="image larger than 10 bytes"):
        list(parse(src(path), registry=small))


def test_image_sections_refuse_damaged_images_and_bombs(tmp_path: Path) -> None:
    import struct
    import zlib

    registry = DEFAULT_REGISTRY.with_parser("image", ImageSectionParser())
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png_bytes(64, 64)[:-30])
    with pytest.raises(ParseError, match="damaged image"):
        list(parse(src(truncated), registry=registry))
    # A PNG header claiming 50,000 x 50,000 pixels: Pillow's bomb limit refuses it undecoded.
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ParseError, match="decompression bomb"):
        list(parse(src(bomb), registry=registry))
    # Named like an image, holding text: detected as text, parsed as text.
    fake = tmp_path / "notes.png"
    fake.write_text("plain words, not pixels")
    (section,) = list(parse(src(fake), registry=registry))
    assert section.image is None and "plain words" in section.text


@pytest.fixture(scope="module")
def seed_documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("seeds")
    return {
        "pdf": make_pdf(
            root / "s.pdf", [["alpha beta"], ["gamma"]], outline=[(1, 0, "G")]
        ).read_bytes(),
        "docx": make_docx(
            root / "s.docx", [("h1", "T"), ("p", "body"), ("table", [["a", "b"]])]
        ).read_bytes(),
        "html": b"<html><body><h1>x</h1><p>y</p><pre>z</pre></body></html>",
        "md": b"# a\n\nb\n```\nc\n```\n",
        "csv": b'a,text\n1,x\n2,"y\nz"\n',
        "jsonl": b'{"text": "a"}\n{"b": [1, {"c": 2}]}\n',
        "txt": "héllo wörld\n".encode() * 20,
        "png": png_bytes(),
    }


@settings(max_examples=150, deadline=None)
@given(
    ext=st.sampled_from(["pdf", "docx", "html", "md", "csv", "jsonl", "txt", "png"]),
    cut=st.integers(min_value=0, max_value=10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
    rename=st.sampled_from(["", ".txt", ".pdf", ".docx", ".html"]),
)
def test_corrupted_documents_parse_or_raise_parse_error_only(
    seed_documents: dict[str, bytes],
    ext: str,
    cut: int,
    flips: list[tuple[int, int]],
    rename: str,
) -> None:
    # Truncate, overwrite bytes and lie about the name: the outcome is sections or a ParseError,
    # never another exception (and never a crash of the process).
    data = bytearray(seed_documents[ext])
    data = data[: max(1, cut % (len(data) + 1))]
    for at, value in flips:
        data[at % len(data)] = value
    source = Source(uri=f"fuzz.{ext}{rename}", data=bytes(data))
    try:
        got = list(parse(source, on_warning=lambda _m: None))
    except ParseError as exc:
        assert str(exc).startswith(source.uri)
    else:
        assert all(isinstance(s, Section) and (s.text.strip() or s.image) for s in got)


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("Mañana en España, señor, año tras año.", "cp1252"),
        ("Grüße aus Köln: schöne Größe, übrigens.", "latin-1"),
        ("Привет, как дела? Это тест кодировки.", "cp1251"),
        ("Привет, как дела? Это тест кодировки.", "koi8-r"),
        ("これは日本語のテキストです。", "shift_jis"),
        ("Zażółć gęślą jaźń, to jest test.", "cp1250"),
    ],
)
def test_legacy_encodings_are_detected(tmp_path: Path, text: str, codec: str) -> None:
    body = (text + "\n") * 5
    path = tmp_path / "legacy.txt"
    path.write_bytes(body.encode(codec))
    assert joined(sections(path)) == body
