"""The extension points the docs promise, through ``ingest`` and a real worker process:
a parser registered for a made-up extension and media type, and a chunker factory."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _pipeline_support import FakeEmbedder
from vectorstream.chunking import ChunkerFactory, ChunkOptions
from vectorstream.parsers import DEFAULT_REGISTRY, ParseOptions, Parser
from vectorstream.pipeline import ingest
from vectorstream.types import Chunk, Section, Source


@dataclass(frozen=True)
class ShoutParser:
    """The made-up ``.shout`` format: one section per non-blank line, upper-cased."""

    def parse(self, source: Source, options: ParseOptions, warn: Any) -> Iterator[Section]:
        text = source.text if source.text is not None else Path(str(source.path)).read_text()
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                yield Section(
                    text=line.upper(), source=source.uri, metadata={"line": n, "pid": os.getpid()}
                )


@dataclass(frozen=True)
class LineChunker:
    tag: str
    tokenizer: Any

    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        for i, s in enumerate(sections):
            yield Chunk(
                text=s.text,
                source=s.source,
                chunk_index=i,
                start=0,
                end=len(s.text),
                section_index=s.index,
                metadata={**s.metadata, "chunker": self.tag},
                n_tokens=len(self.tokenizer.encode(s.text, add_special_tokens=False).ids),
            )


@dataclass(frozen=True)
class LineChunkerFactory:
    """One chunk per section, tagged; a dataclass, so it pickles and its settings are its repr."""

    tag: str

    def __call__(
        self,
        options: ChunkOptions,
        tokenizer: Any,
        max_tokens: int,
        *,
        num_special_tokens: int = 2,
        embed: Any = None,
    ) -> LineChunker:
        return LineChunker(self.tag, tokenizer)


def _rows(store_dir: Path) -> list[dict[str, Any]]:
    import lancedb

    table = lancedb.connect(str(store_dir)).open_table("documents")
    rows = table.to_arrow().select(["text", "source", "metadata"]).to_pylist()
    for row in rows:
        if isinstance(row["metadata"], str):
            row["metadata"] = json.loads(row["metadata"])
    return sorted(rows, key=lambda r: (r["source"], r["metadata"].get("line", 0)))


def test_the_extension_points_have_the_documented_shapes() -> None:
    assert isinstance(ShoutParser(), Parser)
    assert isinstance(LineChunkerFactory("x"), ChunkerFactory)


def test_a_custom_parser_and_chunker_run_in_a_worker_process(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.shout").write_text("hello there\n\nquiet please\n", encoding="utf-8")
    (corpus / "b.md").write_text("# Plain\n\nA markdown file, parsed as usual.\n")
    registry = DEFAULT_REGISTRY.with_parser(
        "shout", ShoutParser(), extensions=(".shout",), media_types=("text/x-shout",)
    )
    upload = Source(uri="upload-1", text="from a client\n", media_type="text/x-shout")
    store = tmp_path / "store"

    report = ingest(
        [corpus, upload],
        store=f"lancedb://{store}",
        model=FakeEmbedder(),
        workers=1,
        parsers=registry,
        chunker_factory=LineChunkerFactory("lines"),
    )
    assert report.ok, report.errors
    assert report.files_ok == 3
    rows = _rows(store)
    texts = {(Path(r["source"]).name, r["text"].strip()) for r in rows}
    assert texts == {
        ("a.shout", "HELLO THERE"),
        ("a.shout", "QUIET PLEASE"),
        ("b.md", "# Plain\n\nA markdown file, parsed as usual."),  # built-in parser, our chunker
        ("upload-1", "FROM A CLIENT"),
    }
    shout = [r for r in rows if r["source"].endswith("a.shout")]
    assert [r["metadata"]["format"] for r in shout] == ["shout", "shout"]
    assert all(r["metadata"]["chunker"] == "lines" for r in rows)
    # Parsed in a worker process, not in this one.
    assert {r["metadata"]["pid"] for r in shout} != {os.getpid()}

    # Unchanged files under the same extensions are skipped; another chunker re-embeds them.
    # (In a thread this time: the manifest is what is tested, not the worker processes.)
    again = ingest(
        [corpus, upload],
        store=f"lancedb://{store}",
        model=FakeEmbedder(),
        workers=0,
        parsers=registry,
        chunker_factory=LineChunkerFactory("lines"),
    )
    assert again.files_skipped == 3 and again.chunks == 0
    other = ingest(
        [corpus, upload],
        store=f"lancedb://{store}",
        model=FakeEmbedder(),
        workers=0,
        parsers=registry,
        chunker_factory=LineChunkerFactory("other"),
    )
    assert other.files_ok == 3
    assert {r["metadata"]["chunker"] for r in _rows(store)} == {"other"}


def test_a_lambda_factory_is_refused_before_any_work(tmp_path: Path) -> None:
    from vectorstream.errors import ConfigError

    with pytest.raises(ConfigError, match="must pickle"):
        ingest(
            [tmp_path],
            store=f"lancedb://{tmp_path / 'store'}",
            model=FakeEmbedder(),
            workers=1,
            chunker_factory=lambda *a, **k: None,  # type: ignore[arg-type,return-value]
        )
    assert not (tmp_path / "store").exists()
