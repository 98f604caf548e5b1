"""Process a source: read, parse and chunk it, streaming typed messages.

A large document never travels as one object: chunks go out in batches of at most
``MESSAGE_CHUNKS`` chunks or ``MESSAGE_BYTES`` bytes, and the source ends with exactly one of
``SourceDone``, ``SourceUnchanged`` or ``SourceFailed``. One bad source never raises: it fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...chunking import ChunkOptions, load_tokenizer, make_chunker
from ...parsers import DEFAULT_REGISTRY, ImageParser, ImageSectionParser, ParseOptions, parse
from ...sources import fingerprint
from ...types import Chunk
from .messages import (
    ChunkBatch,
    ProcessMessage,
    SourceDone,
    SourceFailed,
    SourceUnchanged,
    SourceWarning,
    Task,
)

log = logging.getLogger("vectorstream.pipeline.process")

MESSAGE_CHUNKS = 64
MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """Everything a processor needs; it pickles, so worker processes (and Ray tasks) build their own."""

    tokenizer_path: str
    max_tokens: int
    num_special_tokens: int
    chunk_options: ChunkOptions
    parse_options: ParseOptions
    semantic_model: str | None = (
        None  # model spec, loaded by the processor for the semantic splitter
    )
    parsers: Any = None  # a ParserRegistry, or None for the built-in parsers
    chunker_factory: Callable[..., Any] | None = None  # builds a Chunker, instead of make_chunker
    images: bool = False  # the model embeds images: image files become one image chunk each


class SourceProcessor:
    """Holds the tokenizer (and the semantic splitter's model) so each process builds them once."""

    def __init__(self, config: ProcessConfig) -> None:
        self.config = config
        self._registry = config.parsers
        if config.images:
            # Text ingest refuses images (no model for them); an image model takes their bytes.
            base = config.parsers if config.parsers is not None else DEFAULT_REGISTRY
            if isinstance(base.get("image"), ImageParser):
                self._registry = base.with_parser("image", ImageSectionParser())
        tokenizer = load_tokenizer(config.tokenizer_path)
        embed = None
        if config.chunk_options.splitter == "semantic" and config.chunker_factory is None:
            from ...models import load_model

            model = load_model(config.semantic_model, threads=1)
            embed = model.embed
        factory = config.chunker_factory or make_chunker
        self._make: Callable[[], Any] = lambda: factory(
            config.chunk_options,
            tokenizer,
            config.max_tokens,
            num_special_tokens=config.num_special_tokens,
            embed=embed,
        )

    def process(self, task: Task) -> Iterator[ProcessMessage]:
        source = task.source
        uri = source.uri
        stage = "read"
        warnings: list[str] = []
        try:
            digest = fingerprint(source)
            if task.known_hash is not None and digest == task.known_hash:
                yield SourceUnchanged(uri, digest)
                return
            stage = "parse"
            sections = self._parse(source, warnings.append)
            chunker = self._make()
            batch: list[Chunk] = []
            batch_bytes = 0
            n_chunks = 0
            total_bytes = 0
            images: list[Any] = []
            texts = _text_only(_staged(sections, "parse"), images)
            for chunk in _then_images(chunker.chunk(texts), images):
                while warnings:
                    yield SourceWarning(uri, warnings.pop(0))
                batch.append(chunk)
                size = len(chunk.text) * 2 + 200 + len(chunk.image or b"")
                batch_bytes += size
                total_bytes += len(chunk.text)
                n_chunks += 1
                if len(batch) >= MESSAGE_CHUNKS or batch_bytes >= MESSAGE_BYTES:
                    yield ChunkBatch(uri, tuple(batch), batch_bytes)
                    batch, batch_bytes = [], 0
            while warnings:
                yield SourceWarning(uri, warnings.pop(0))
            if batch:
                yield ChunkBatch(uri, tuple(batch), batch_bytes)
            if n_chunks == 0:
                yield SourceFailed(uri, "parse", "EmptyDocument", "no text found in the document")
                return
            yield SourceDone(uri, digest, n_chunks, total_bytes)
        except _StageError as exc:
            cause = exc.__cause__ or exc
            yield SourceFailed(uri, exc.stage, type(cause).__name__, message_of(cause))
        except MemoryError as exc:
            yield SourceFailed(uri, stage, "MemoryError", message_of(exc))
        except Exception as exc:  # one bad source must never stop the run
            if stage == "parse":
                stage = "chunk"  # parse errors arrive wrapped by _staged; the rest is chunking
            log.debug("source %s failed at %s", uri, stage, exc_info=True)
            yield SourceFailed(uri, stage, type(exc).__name__, message_of(exc))

    def _parse(self, source: Any, on_warning: Callable[[str], None]) -> Any:
        registry = self._registry
        if registry is not None:
            return registry.parse(source, self.config.parse_options, on_warning=on_warning)
        return parse(source, self.config.parse_options, on_warning=on_warning)


def _text_only(sections: Iterator[Any], images: list[Any]) -> Iterator[Any]:
    """The text sections, for the chunker; image sections are set aside in ``images``."""
    for section in sections:
        if section.image is not None:
            images.append(section)
        else:
            yield section


def _then_images(chunks: Iterator[Chunk], images: list[Any]) -> Iterator[Chunk]:
    """The text chunks, then one chunk per image section (numbered after them)."""
    index = 0
    for chunk in chunks:
        index = chunk.chunk_index + 1
        yield chunk
    for section in images:
        yield Chunk(
            text="",
            source=section.source,
            chunk_index=index,
            start=section.start,
            end=section.start,
            section_index=section.index,
            page=section.page,
            headings=section.headings,
            metadata=section.metadata,
            n_tokens=0,
            image=section.image,
        )
        index += 1


class _StageError(Exception):
    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


def _staged(sections: Any, stage: str) -> Iterator[Any]:
    """Re-raise errors of the section iterator as ``_StageError`` so they are blamed on parsing."""
    it = iter(sections)
    while True:
        try:
            section = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise _StageError(stage) from exc
        yield section


def message_of(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


__all__ = ["MESSAGE_BYTES", "MESSAGE_CHUNKS", "ProcessConfig", "SourceProcessor", "message_of"]
