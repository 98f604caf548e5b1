"""Ingest options: built and validated in one place, before any model loads; one error category."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vectorstream.chunking import ChunkOptions, make_chunker
from vectorstream.errors import ChunkingError, ConfigError, PipelineError, VectorstreamError
from vectorstream.parsers import DEFAULT_REGISTRY, ParseOptions
from vectorstream.pipeline import PipelineOptions, ingest
from vectorstream.pipeline.options import check_collection, ingest_options
from vectorstream.types import Chunk, Section, Source


@dataclass(frozen=True)
class EchoParser:
    prefix: str = ""

    def parse(self, source: Source, options: ParseOptions, warn: Any) -> Iterator[Section]:
        yield Section(text=self.prefix + (source.text or ""), source=source.uri)


class WholeChunker:
    def chunk(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        for i, s in enumerate(sections):
            yield Chunk(text=s.text, source=s.source, chunk_index=i, start=0, end=len(s.text))


def whole_chunker(
    options: ChunkOptions,
    tokenizer: Any,
    max_tokens: int,
    *,
    num_special_tokens: int = 2,
    embed: Any = None,
) -> WholeChunker:
    return WholeChunker()


def test_chunking_errors_are_config_errors_and_pipeline_errors_are_not() -> None:
    assert issubclass(ChunkingError, ConfigError)
    assert not issubclass(PipelineError, ConfigError)
    assert issubclass(ConfigError, VectorstreamError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer": 1}, "buffer must be at least 16"),
        ({"buffer": True}, "buffer must be at least 16"),
        ({"workers": -1}, "workers must be an integer >= 0"),
        ({"workers": 1.5}, "workers must be an integer >= 0"),
        ({"window": 0}, "window must be a positive integer"),
        ({"commit_rows": 0}, "commit_rows must be a positive integer"),
        ({"commit_seconds": float("nan")}, "commit_seconds must be a positive number"),
        ({"commit_seconds": 0}, "commit_seconds must be a positive number"),
        ({"prune": "yes"}, "prune must be True or False"),
        ({"worker_nice": 20}, "worker_nice must be an integer 0..19"),
        ({"semantic_model": ""}, "semantic_model must be a model spec"),
        ({"chunk": {"splitter": "tokens"}}, "chunk must be a ChunkOptions"),
        ({"parsers": {"x": EchoParser()}}, "parsers must be a ParserRegistry"),
        ({"chunker_factory": "make_chunker"}, "chunker_factory must be callable"),
        ({"inference_cpus": ()}, "non-empty tuple of CPU numbers"),
        ({"io_cpus": "0"}, "tuple of CPU numbers"),
        ({"io_cpus": (0.5,)}, "non-empty tuple of CPU numbers"),
        ({"inference_cpus": (10_000,)}, "not ones this process may use"),
    ],
)
def test_bad_pipeline_options_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PipelineOptions(**kwargs)


def test_cpu_sets_are_checked_against_the_affinity_and_normalised() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    opts = PipelineOptions(inference_cpus=[allowed[0]], io_cpus=tuple(reversed(allowed)) * 2)
    assert opts.inference_cpus == (allowed[0],)
    assert opts.io_cpus == tuple(allowed)  # sorted, duplicates dropped


def test_extension_points_must_pickle_for_worker_processes() -> None:
    with pytest.raises(ConfigError, match="must pickle to reach the worker processes"):
        PipelineOptions(chunker_factory=lambda *a, **k: WholeChunker())
    local = DEFAULT_REGISTRY.with_parser("echo", type("Local", (EchoParser,), {})())
    with pytest.raises(ConfigError, match="parsers must pickle"):
        PipelineOptions(parsers=local, workers=2)
    # In a thread of this process nothing is pickled: a lambda is fine.
    assert PipelineOptions(chunker_factory=lambda *a, **k: WholeChunker(), workers=0)


def test_objects_of_the_main_script_are_refused_for_worker_processes() -> None:
    main_parser = type("MainParser", (EchoParser,), {"__module__": "__main__"})()
    registry = DEFAULT_REGISTRY.with_parser("echo", main_parser)
    with pytest.raises(ConfigError, match="__main__ script"):
        PipelineOptions(parsers=registry, workers=1)
    assert PipelineOptions(parsers=registry, workers=0).parsers is registry


def test_options_with_a_registry_and_a_factory_pickle_and_keep_working() -> None:
    registry = DEFAULT_REGISTRY.with_parser("echo", EchoParser("> "), extensions=(".echo",))
    opts = PipelineOptions(parsers=registry, chunker_factory=whole_chunker, workers=1)
    back = pickle.loads(pickle.dumps(opts))
    assert back == opts
    source = Source(uri="a.echo", path="a.echo", text="hello")
    sections = list(back.parsers.parse(source))
    assert [s.text for s in sections] == ["> hello"]
    assert sections[0].metadata["format"] == "echo"
    chunker = back.chunker_factory(back.chunk, None, 128, num_special_tokens=2, embed=None)
    assert [c.text for c in chunker.chunk(sections)] == ["> hello"]


def test_the_extensions_key_names_what_changes_the_output() -> None:
    assert PipelineOptions().extensions_key == ""
    assert (
        PipelineOptions(parsers=DEFAULT_REGISTRY, chunker_factory=make_chunker).extensions_key == ""
    )
    a = PipelineOptions(parsers=DEFAULT_REGISTRY.with_parser("echo", EchoParser("a")))
    b = PipelineOptions(parsers=DEFAULT_REGISTRY.with_parser("echo", EchoParser("b")))
    assert a.extensions_key != b.extensions_key and "EchoParser" in a.extensions_key
    c = PipelineOptions(chunker_factory=whole_chunker)
    assert c.extensions_key.endswith("whole_chunker]")
    # Stable across processes: names, never addresses.
    assert pickle.loads(pickle.dumps(c)).extensions_key == c.extensions_key


def test_chunk_options_are_checked_against_the_model_limit() -> None:
    opts = PipelineOptions(chunk=ChunkOptions(splitter="tokens", chunk_tokens=1000, overlap=300))
    opts.check_model(max_tokens=512)
    with pytest.raises(ConfigError, match="lower --overlap"):
        opts.check_model(max_tokens=256)
    with pytest.raises(ConfigError, match="no room"):
        PipelineOptions().check_model(max_tokens=2)
    # A custom chunker sets its own limits.
    PipelineOptions(chunk=opts.chunk, chunker_factory=whole_chunker).check_model(max_tokens=256)


@pytest.mark.parametrize(
    ("store", "collection", "message"),
    [
        ("lancedb:///tmp/x", "a/b", "without '/'"),
        ("lancedb:///tmp/x", "", "1-255 characters"),
        ("lancedb:///tmp/x", "..", "cannot be"),
        ("lancedb:///tmp/x", "has space", "LanceDB collection names"),
        ("chroma:/tmp/x", "ab", "Chroma collection names"),
        ("elasticsearch://localhost:9200", "Docs", "lowercase"),
        ("weaviate://localhost:8080", "my-docs", "Weaviate class names"),
    ],
)
def test_collection_names_are_checked_for_their_store(
    store: str, collection: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_collection(store, collection)


def test_collection_names_stores_take() -> None:
    check_collection("lancedb:///tmp/x", "docs_2.v1")
    check_collection("postgresql://localhost/db", "Any Name")
    check_collection("elasticsearch://localhost:9200", "docs")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splitter": "foo"}, "unknown splitter 'foo'"),
        ({"overlap": 300, "chunk_tokens": 256}, r"overlap \(300\) must be smaller"),
        ({"chunk_tokens": 0}, "chunk_tokens must be positive"),
        ({"buffer": 1}, "buffer must be at least 16"),
        ({"store": "nosuch://x"}, "unknown store URI scheme"),
        ({"collection": "a/b"}, "collection must be"),
        ({"backend": "tensorflow"}, "backend must be"),
        ({"backend": "torch", "quantized": True}, "needs the onnx backend"),
        ({"text_field": ""}, "text_field must be a field name"),
        ({"include": ["[z-a]"]}, "invalid glob"),
        ({"exclude": [""]}, "empty glob pattern"),
        ({"include": [1]}, "glob patterns"),
    ],
)
def test_bad_ingest_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ingest_options(**kwargs)


def test_ingest_options_resolve_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VECTORSTREAM_COLLECTION", "from_env")
    monkeypatch.setenv("VECTORSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    opts = ingest_options(store=f"lancedb://{tmp_path}", include="*.md", splitter="semantic")
    assert opts.collection == "from_env" and opts.include == ("*.md",)
    assert opts.cache_path == tmp_path / "cache"
    assert opts.pipeline.semantic_model == opts.model
    given = ingest_options(model_given=True, store_given=True)
    assert given.model is None and given.store is None and given.collection is None


def test_ingest_refuses_bad_options_before_loading_a_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import vectorstream.models

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(vectorstream.models, "load_model", no_model)
    (tmp_path / "a.md").write_text("hello")
    store = f"lancedb://{tmp_path / 'store'}"
    for kwargs in (
        {"splitter": "foo"},
        {"overlap": 300, "chunk_tokens": 256},
        {"buffer": 1},
        {"collection": "bad name"},
        {"workers": -2},
    ):
        with pytest.raises(ConfigError):
            ingest([tmp_path / "a.md"], store=store, **kwargs)
    with pytest.raises(ConfigError, match="none of the given paths exists"):
        ingest([tmp_path / "missing.md"], store=store)
    assert not (tmp_path / "store").exists()


def test_a_model_kind_is_checked_before_anything_loads() -> None:
    from vectorstream.pipeline.options import ingest_options

    assert ingest_options(kind="Sparse").kind == "sparse"
    assert ingest_options().kind is None
    with pytest.raises(ConfigError, match="unknown model kind 'bogus'"):
        ingest_options(kind="bogus")
    with pytest.raises(ConfigError, match="reranker"):
        ingest_options(kind="rerank")
