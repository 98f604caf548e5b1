"""The sample corpus: deterministic, every format real and parseable, scale multiplies files."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import docx
import pypdfium2
import pytest
from selectolax.lexbor import LexborHTMLParser

from vectorstream.errors import ConfigError
from vectorstream.samples import FORMATS, CorpusInfo, build_sample_corpus


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return build_sample_corpus(tmp_path_factory.mktemp("corpus"), documents=10, seed=0)


def test_info_describes_what_was_written(corpus: CorpusInfo) -> None:
    files = sorted(corpus.path.iterdir())
    assert corpus.files == len(files) == 10
    assert corpus.bytes == sum(p.stat().st_size for p in files)
    assert dict(corpus.by_format) == {fmt: 2 for fmt in FORMATS}
    assert {p.suffix.lstrip(".") for p in files} == set(FORMATS)
    assert len(corpus.modules) == 10 and len(set(corpus.modules)) == 10
    with pytest.raises(TypeError):
        corpus.by_format["md"] = 3  # type: ignore[index]


def test_same_seed_gives_identical_bytes(corpus: CorpusInfo, tmp_path: Path) -> None:
    again = build_sample_corpus(tmp_path / "again", documents=10, seed=0)
    assert _digests(again.path) == _digests(corpus.path)


def test_identical_across_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    # String hashing differs between processes; nothing in the output may depend on it.
    script = (
        "import sys; from vectorstream.samples import build_sample_corpus; "
        "build_sample_corpus(sys.argv[1], documents=5, seed=3)"
    )
    for name, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, env=env)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_other_seed_draws_other_modules(corpus: CorpusInfo, tmp_path: Path) -> None:
    other = build_sample_corpus(tmp_path, documents=10, seed=1, formats=("txt",))
    assert other.modules != corpus.modules


def test_pdf_opens_and_holds_the_text(corpus: CorpusInfo) -> None:
    for path in sorted(corpus.path.glob("*.pdf")):
        pdf = pypdfium2.PdfDocument(path)
        try:
            text = "".join(page.get_textpage().get_text_range() for page in pdf)
            assert len(pdf) >= 1
        finally:
            pdf.close()
        module = path.stem.split("_", 1)[1].replace("_", ".")
        assert module in text
        assert len(text) > 200


def test_some_pdf_has_several_pages(tmp_path: Path) -> None:
    info = build_sample_corpus(tmp_path, documents=15, formats=("pdf",))
    pages = []
    for path in info.path.glob("*.pdf"):
        pdf = pypdfium2.PdfDocument(path)
        pages.append(len(pdf))
        pdf.close()
    assert max(pages) >= 3


def test_docx_has_headings_paragraphs_and_a_table(corpus: CorpusInfo) -> None:
    for path in sorted(corpus.path.glob("*.docx")):
        document = docx.Document(str(path))
        styles = {p.style.name for p in document.paragraphs if p.style is not None}
        assert "Title" in styles and "Heading 1" in styles
        assert sum(1 for p in document.paragraphs if p.text.strip()) > 5
        assert len(document.tables) == 1
        assert document.tables[0].rows[0].cells[0].text == "Name"
        assert len(document.tables[0].rows) > 1


def test_html_is_a_real_page_with_noise_to_drop(corpus: CorpusInfo) -> None:
    for path in sorted(corpus.path.glob("*.html")):
        tree = LexborHTMLParser(path.read_text("utf-8"))
        for tag in ("head", "title", "nav", "style", "script", "h1", "h2", "p"):
            assert tree.css_first(tag) is not None, (path.name, tag)
        assert "analytics" in tree.html
        for node in tree.css("script, style, nav"):
            node.decompose()
        body = tree.body
        assert body is not None
        text = body.text()
        assert "analytics" not in text and "font-family" not in text
        assert len(text) > 200


def test_markdown_has_headings_and_code_fences(tmp_path: Path) -> None:
    info = build_sample_corpus(tmp_path, documents=20, formats=("md",))
    texts = [p.read_text("utf-8") for p in info.path.glob("*.md")]
    assert all(t.startswith("# ") and "\n## " in t for t in texts)
    assert any("```python\n" in t for t in texts)


def test_text_files_are_plain_utf8(corpus: CorpusInfo) -> None:
    for path in corpus.path.glob("*.txt"):
        text = path.read_text("utf-8")
        assert "<" not in text.splitlines()[0] and "\n====" in text


def test_scale_multiplies_files_with_distinct_content(tmp_path: Path) -> None:
    info = build_sample_corpus(tmp_path, documents=5, scale=3)
    assert info.files == 15
    assert sum(info.by_format.values()) == 15
    digests = _digests(info.path)
    assert len(digests) == 15
    assert len(set(digests.values())) == 15


def test_more_documents_than_modules_cycle_as_variants(tmp_path: Path) -> None:
    info = build_sample_corpus(tmp_path, documents=150, formats=("txt",))
    assert info.files == 150
    assert len(set(_digests(info.path).values())) == 150


def test_formats_subset_and_bad_arguments(tmp_path: Path) -> None:
    info = build_sample_corpus(tmp_path / "sub", documents=4, formats=("md", "txt"))
    assert dict(info.by_format) == {"md": 2, "txt": 2}
    with pytest.raises(ConfigError, match="unknown formats"):
        build_sample_corpus(tmp_path / "bad", formats=("md", "rtf"))
    with pytest.raises(ConfigError):
        build_sample_corpus(tmp_path / "bad", documents=0)
    with pytest.raises(ConfigError):
        build_sample_corpus(tmp_path / "bad", scale=0)


def test_missing_pdf_library_skips_pdf_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A None entry in sys.modules makes "import reportlab" raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "reportlab", None)
    with caplog.at_level(logging.WARNING, logger="vectorstream.samples"):
        info = build_sample_corpus(tmp_path, documents=8)
    assert "pdf" not in info.by_format
    assert info.files == 8
    assert any("reportlab" in r.getMessage() for r in caplog.records)


def test_docx_zoom_carries_the_required_percent(corpus: CorpusInfo) -> None:
    # Strict OOXML readers reject <w:zoom> without w:percent; python-docx's template omits it.
    import zipfile

    for path in corpus.path.glob("*.docx"):
        with zipfile.ZipFile(path) as archive:
            settings = archive.read("word/settings.xml").decode("utf-8")
        assert re.search(r"<w:zoom [^>]*w:percent=\"100\"", settings), path.name
