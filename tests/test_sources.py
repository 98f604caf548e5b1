"""Sources: file walks (order, globs, hidden/VCS, symlinks, problems), path lists, texts, hashes."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from vectorstream.errors import ConfigError, ParseError
from vectorstream.parsers import parse
from vectorstream.sources import (
    SourceProblem,
    fingerprint,
    from_texts,
    is_url,
    iter_files,
    iter_urls,
    read_path_list,
)
from vectorstream.types import Source


def tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    return root


def rels(sources: object, root: Path) -> list[str]:
    return [os.path.relpath(s.uri, root).replace(os.sep, "/") for s in sources]  # type: ignore[attr-defined]


FILES = [
    "b.txt",
    "a.md",
    "docs/guide.md",
    "docs/api/ref.md",
    "docs/api/ref.html",
    "src/pkg/mod.py",
    "src/pkg/data.csv",
    ".hidden.txt",
    ".config/settings.toml",
    ".git/HEAD",
    ".git/objects/ab/cdef",
    "node_modules/lib/index.js",
    "src/__pycache__/mod.cpython-311.pyc",
]


def test_walk_is_recursive_sorted_and_skips_hidden_and_vcs(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", FILES)
    got = list(iter_files([root]))
    assert rels(got, root) == [
        "a.md",
        "b.txt",
        "docs/api/ref.html",
        "docs/api/ref.md",
        "docs/guide.md",
        "src/pkg/data.csv",
        "src/pkg/mod.py",
    ]
    first = got[0]
    stat = (root / "a.md").stat()
    assert first.uri == first.path == str(root / "a.md")
    assert os.path.isabs(first.uri)
    assert first.size == stat.st_size and first.mtime_ns == stat.st_mtime_ns
    assert first.text is None and first.data is None
    # Deterministic: a second walk gives the same sources.
    assert list(iter_files([root])) == got


def test_hidden_true_includes_dotfiles_but_not_vcs(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", FILES)
    got = rels(iter_files([root], hidden=True), root)
    assert ".hidden.txt" in got and ".config/settings.toml" in got
    assert not any(r.startswith((".git/", "node_modules/", "src/__pycache__/")) for r in got)
    everything = rels(iter_files([root], hidden=True, skip_dirs=()), root)
    assert ".git/HEAD" in everything and "node_modules/lib/index.js" in everything


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["*.md"], [], ["a.md", "docs/api/ref.md", "docs/guide.md"]),
        (["docs/*.md"], [], ["docs/guide.md"]),
        (["docs/**/*.md"], [], ["docs/api/ref.md", "docs/guide.md"]),
        (["**/*.md"], [], ["a.md", "docs/api/ref.md", "docs/guide.md"]),
        (["*.md", "*.py"], ["api"], ["a.md", "docs/guide.md", "src/pkg/mod.py"]),
        ([], ["docs", "*.csv"], ["a.md", "b.txt", "src/pkg/mod.py"]),
        (
            [],
            ["docs/api/*"],
            ["a.md", "b.txt", "docs/guide.md", "src/pkg/data.csv", "src/pkg/mod.py"],
        ),
        (["./src/**"], [], ["src/pkg/data.csv", "src/pkg/mod.py"]),
        (["[ab].*"], [], ["a.md", "b.txt"]),
        (["?.txt"], [], ["b.txt"]),
    ],
)
def test_include_and_exclude_globs(
    tmp_path: Path, include: list[str], exclude: list[str], expected: list[str]
) -> None:
    root = tree(tmp_path / "corpus", FILES)
    assert rels(iter_files([root], include=include, exclude=exclude), root) == expected


def test_gitignore_rules_are_honoured(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "repo",
        [
            "README.md",
            "notes.log",
            "keep.log",
            "build/out.txt",
            "top.txt",
            "docs/top.txt",
            "docs/guide.md",
            "docs/draft.md",
            "docs/sub/draft.md",
            "docs/sub/kept.md",
            "data/big.csv",
        ],
    )
    (root / ".gitignore").write_text("# comment\n*.log\n!keep.log\nbuild/\n/top.txt\n")
    # A nested ignore file applies below its folder and can override the outer one.
    (root / "docs" / ".gitignore").write_text("draft.md\n!sub/draft.md\n")
    (root / "data" / ".ignore").write_text("*\n")
    got = rels(iter_files([root]), root)
    assert got == [
        "README.md",
        "docs/guide.md",
        "docs/sub/draft.md",
        "docs/sub/kept.md",
        "docs/top.txt",
        "keep.log",
    ]
    everything = rels(iter_files([root], ignore_files=()), root)
    assert (
        "notes.log" in everything and "build/out.txt" in everything and "data/big.csv" in everything
    )


def test_explicit_files_bypass_filters_and_keep_given_order(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", FILES)
    given = [root / "src/pkg/mod.py", root / ".hidden.txt", root / "docs"]
    got = rels(iter_files(given, include=["*.md"]), root)
    assert got == ["src/pkg/mod.py", ".hidden.txt", "docs/api/ref.md", "docs/guide.md"]


def test_a_single_path_need_not_be_in_a_list(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", ["one.txt", "two.md"])
    assert rels(iter_files(root), root) == ["one.txt", "two.md"]
    assert rels(iter_files(str(root)), root) == ["one.txt", "two.md"]


def test_relative_paths_become_absolute_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(tmp_path, ["x/one.txt"])
    monkeypatch.chdir(tmp_path)
    (source,) = iter_files(["x"])
    assert source.uri == str(tmp_path / "x" / "one.txt")


def test_symlink_loop_terminates_and_aliases_are_walked_once(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", ["a/file.txt", "b/other.txt"])
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "alias_to_a").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "linked.txt").symlink_to(root / "a" / "file.txt")
    got = rels(iter_files([root]), root)
    assert got == ["a/file.txt", "b/linked.txt", "b/other.txt"]
    no_links = rels(iter_files([root], follow_symlinks=False), root)
    assert no_links == ["a/file.txt", "b/other.txt"]


def test_symlinked_folder_is_followed(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", ["shared/doc.md"])
    root = tree(tmp_path / "corpus", ["own.txt"])
    (root / "shared").symlink_to(outside / "shared", target_is_directory=True)
    got = list(iter_files([root]))
    # The URI keeps the path as walked (through the link), consistently.
    assert [s.uri for s in got] == [str(root / "own.txt"), str(root / "shared" / "doc.md")]
    assert rels(iter_files([root], follow_symlinks=False), root) == ["own.txt"]


def test_missing_paths_are_problems_while_others_are_walked(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", ["a.txt"])
    (root / "dangling").symlink_to(root / "nowhere.txt")
    walk = iter_files([tmp_path / "missing.txt", root, tmp_path / "also-missing"])
    assert rels(walk, root) == ["a.txt"]
    assert walk.problems == [
        SourceProblem(str(tmp_path / "missing.txt"), "missing", "no such file or folder"),
        SourceProblem(str(root / "dangling"), "broken-link", "symbolic link to a missing target"),
        SourceProblem(str(tmp_path / "also-missing"), "missing", "no such file or folder"),
    ]
    assert "missing.txt: no such file" in str(walk.problems[0])
    assert pickle.loads(pickle.dumps(walk.problems)) == walk.problems


def test_no_existing_path_is_a_config_error(tmp_path: Path) -> None:
    walk = iter_files([tmp_path / "nope", tmp_path / "neither"])
    with pytest.raises(ConfigError, match=r"none of the given paths exists: .*nope, .*neither"):
        list(walk)
    assert [p.kind for p in walk.problems] == ["missing", "missing"]
    with pytest.raises(ConfigError, match=r"m4, and 2 more$|m4 and 2 more$"):
        list(iter_files([tmp_path / f"m{i}" for i in range(7)]))
    assert list(iter_files([])) == []
    assert list(iter_files([tmp_path])) == []  # an empty folder exists: no error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_folder_is_a_problem(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", ["ok.txt", "locked/secret.txt"])
    (root / "locked").chmod(0)
    try:
        walk = iter_files([root])
        assert rels(walk, root) == ["ok.txt"]
        assert [p.kind for p in walk.problems] == ["unreadable"]
    finally:
        (root / "locked").chmod(0o755)


def test_walk_is_lazy_over_a_path_stream(tmp_path: Path) -> None:
    tree(tmp_path, ["one.txt", "two.txt"])
    pulled: list[str] = []

    def paths() -> object:
        for name in ("one.txt", "two.txt"):
            pulled.append(name)
            yield tmp_path / name

    walk = iter_files(paths())  # type: ignore[arg-type]
    assert pulled == []
    next(walk)
    assert pulled == ["one.txt"]


def test_read_path_list() -> None:
    stream = io.StringIO("a.txt\n\n  \nb dir/with space.md\r\n trailing space \nlast")
    assert list(read_path_list(stream)) == [
        "a.txt",
        "b dir/with space.md",
        " trailing space ",
        "last",
    ]


def test_path_list_feeds_the_walk(tmp_path: Path) -> None:
    tree(tmp_path, ["x.txt", "y/z.md"])
    stream = io.StringIO(f"{tmp_path / 'x.txt'}\n\n{tmp_path / 'y'}\n")
    assert rels(iter_files(read_path_list(stream)), tmp_path) == ["x.txt", "y/z.md"]


def test_from_texts_list_and_mapping() -> None:
    listed = list(from_texts(["first", "zweite ü"], prefix="note"))
    assert [s.uri for s in listed] == ["note:0", "note:1"]
    assert [s.text for s in listed] == ["first", "zweite ü"]
    assert listed[1].size == len("zweite ü".encode())
    mapped = list(from_texts({"doc-a": "alpha", "doc-b": "beta"}))
    assert [(s.uri, s.text) for s in mapped] == [("doc-a", "alpha"), ("doc-b", "beta")]
    assert pickle.loads(pickle.dumps(mapped)) == mapped


def test_from_texts_rejects_a_single_string_and_non_text() -> None:
    with pytest.raises(ConfigError, match="not a single string"):
        list(from_texts("oops"))
    with pytest.raises(ConfigError, match="'text:1' is a int, expected str"):
        list(from_texts(["ok", 5]))  # type: ignore[list-item]


def test_fingerprint_of_file_text_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    content = "the same content, ü\n" * 100_000  # > 1 MiB: read in several blocks
    path.write_text(content, encoding="utf-8")
    (file_source,) = iter_files([path])
    (text_source,) = from_texts([content])
    data_source = Source(uri="mem", data=content.encode())
    expected = hashlib.blake2b(content.encode(), digest_size=16).hexdigest()
    assert (
        fingerprint(file_source) == fingerprint(text_source) == fingerprint(data_source) == expected
    )
    path.write_text(content + "!", encoding="utf-8")
    assert fingerprint(file_source) != expected


def test_fingerprint_errors(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="cannot read"):
        fingerprint(Source(uri="gone", path=str(tmp_path / "gone")))
    with pytest.raises(ParseError, match="no path, text or data"):
        fingerprint(Source(uri="empty"))


# --------------------------------------------------------------------------- URLs


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {
        "/page": (
            200,
            {
                "Content-Type": "text/html; charset=utf-8",
                "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            b"<html><body><h1>Served</h1><p>Fetched over HTTP.</p></body></html>",
        ),
        "/latin": (
            200,
            {"Content-Type": "text/plain; charset=iso-8859-1"},
            "café crème".encode("latin-1"),
        ),
        "/big": (200, {"Content-Type": "text/plain"}, b"x" * 300_000),
        "/moved": (302, {"Location": "/page"}, b""),
    }

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_urls_are_fetched_and_parsed(http_base: str) -> None:
    fetch = iter_urls([f"{http_base}/page", f"{http_base}/latin", f"{http_base}/moved"])
    page, latin, moved = list(fetch)
    assert fetch.problems == []
    assert page.uri == f"{http_base}/page" and page.data is not None
    assert page.media_type == "text/html; charset=utf-8"
    assert page.size == len(page.data)
    assert page.mtime_ns == 1445412480 * 10**9
    (section,) = list(parse(page))
    assert section.headings == ("Served",) and "Fetched over HTTP." in section.text
    assert section.metadata["format"] == "html"
    # The Content-Type charset decides the decoding.
    assert next(parse(latin)).text == "café crème"
    # A redirect keeps the given URL as identity and records where it ended.
    assert moved.uri == f"{http_base}/moved"
    assert moved.metadata == {"url": f"{http_base}/page"}
    assert fingerprint(moved) == fingerprint(page)


def test_url_failures_are_problems(http_base: str) -> None:
    fetch = iter_urls(
        [
            f"{http_base}/missing",
            f"{http_base}/big",
            "ftp://example.invalid/x",
            f"{http_base}/page",
            "http://127.0.0.1:9/closed",
        ],
        max_bytes=100_000,
        timeout=5,
    )
    assert [s.uri for s in fetch] == [f"{http_base}/page"]
    assert [(p.path, p.kind) for p in fetch.problems] == [
        (f"{http_base}/missing", "http-error"),
        (f"{http_base}/big", "too-large"),
        ("ftp://example.invalid/x", "unsupported"),
        ("http://127.0.0.1:9/closed", "unreachable"),
    ]
    assert fetch.problems[0].reason == "HTTP 404 Not Found"
    assert is_url("HTTPS://x.org") and not is_url("/tmp/file.txt")
