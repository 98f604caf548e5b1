"""Real-time highlights: the best chunks of whole documents for a query, per request.

Each document is chunked and embedded when it is seen; its chunk vectors are kept in a cache keyed by
a hash of the content (and the model and chunking options), bounded in bytes, so a document sent
again costs no inference: only the query is embedded and scored against the cached vectors.

    documents ──chunk──▶ chunks ──embed (cache misses only)──▶ vectors ──· query──▶ best k per document

Offsets are character offsets into the document text (for parsed files, the sections' texts
concatenated: :func:`vectorstream.parsers.document_text`), so ``text[start:end]`` is the highlight;
``section_index`` names the section it starts in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..parsers import document_text
from ..types import Section

log = logging.getLogger("vectorstream.search.highlights")

EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True, slots=True)
class HighlightDocument:
    """A document to highlight: its caller-given ``id`` and its sections (one for plain text)."""

    id: str
    sections: tuple[Section, ...]

    @classmethod
    def from_text(cls, id: str, text: str) -> HighlightDocument:
        return cls(id, (Section(text=text, source=id),))


@dataclass(frozen=True, slots=True)
class Highlight:
    """One highlighted passage: ``text == document_text[start:end]`` (see the module docstring)."""

    text: str
    score: float
    start: int
    end: int
    chunk_index: int
    section_index: int = 0
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": self.score,
            "start": self.start,
            "end": self.end,
            "chunk_index": self.chunk_index,
            "section_index": self.section_index,
            "page": self.page,
        }


@dataclass(frozen=True, slots=True)
class DocumentHighlights:
    """The best passages of one document, best first. ``cached``: no inference was needed."""

    id: str
    highlights: tuple[Highlight, ...]
    chunks: int
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "highlights": [h.to_dict() for h in self.highlights],
            "chunks": self.chunks,
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True, eq=False)
class _Chunked:
    """A document's chunks: spans (start, end, section_index, page or -1) and unit vectors."""

    spans: np.ndarray  # (n, 4) int64
    vectors: np.ndarray  # (n, dim) float32

    @property
    def nbytes(self) -> int:
        return int(self.spans.nbytes + self.vectors.nbytes) + 256  # + bookkeeping, roughly


class VectorCache:
    """A thread-safe LRU cache whose bound is the bytes of the arrays it holds, not an item count."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ConfigError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, _Chunked] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> _Chunked | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, entry: _Chunked) -> None:
        size = entry.nbytes
        with self._lock:
            if size > self.max_bytes:
                return  # larger than the whole cache: keeping it would evict everything for nothing
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _trim(text: str, max_characters: int | None) -> str:
    if max_characters is None or len(text) <= max_characters:
        return text
    cut = text[:max_characters]
    # End on a word boundary when one is near, so snippets do not stop mid-word.
    space = cut.rfind(" ")
    return cut[:space] if space >= max_characters * 0.6 else cut


class HighlightEngine:
    """Chunks, embeds (with a byte-bounded cache) and scores documents against a query.

    ``model`` is an :class:`~vectorstream.models.Embedder` (its tokenizer drives the chunker);
    ``embed`` replaces ``model.embed`` for the vectors (the server routes it through its
    micro-batcher). Thread-safe: the server calls it from worker threads.
    """

    def __init__(
        self,
        model: Any,
        *,
        options: Any = None,
        cache_bytes: int = 64 * 1024 * 1024,
        embed: EmbedFn | None = None,
    ) -> None:
        from ..chunking import ChunkOptions

        self.model = model
        self.options = options or ChunkOptions(splitter="sentences", chunk_tokens=128, overlap=0)
        self.cache = VectorCache(cache_bytes)
        self._embed: EmbedFn = embed or model.embed
        self._chunkers: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def _chunker(self, options: Any) -> Any:
        with self._lock:
            chunker = self._chunkers.get(options)
            if chunker is None:
                from ..chunking import make_chunker

                chunker = make_chunker(
                    options,
                    self.model.tokenizer,
                    self.model.max_tokens,
                    num_special_tokens=getattr(self.model, "num_special_tokens", 2),
                )
                self._chunkers[options] = chunker
            return chunker

    def _key(self, document: HighlightDocument, options: Any) -> str:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{self.model.model_id}\x00{options!r}\x00".encode())
        for section in document.sections:
            digest.update(f"{section.index}\x00{section.page}\x00{len(section.text)}\x00".encode())
            digest.update(section.text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def highlight(
        self,
        query: str,
        documents: Iterable[HighlightDocument],
        *,
        k_per_document: int = 3,
        max_characters: int | None = None,
        options: Any = None,
        query_vector: np.ndarray | None = None,
    ) -> list[DocumentHighlights]:
        """The best ``k_per_document`` chunks of each document, in the order documents were given."""
        if k_per_document < 1:
            raise ConfigError(f"k_per_document must be >= 1, got {k_per_document}")
        if max_characters is not None and max_characters < 1:
            raise ConfigError(f"max_characters must be >= 1, got {max_characters}")
        options = options or self.options
        docs = list(documents)
        keys = [self._key(d, options) for d in docs]
        found: dict[str, _Chunked] = {}
        cached_flags: list[bool] = []
        todo: dict[str, HighlightDocument] = {}
        for doc, key in zip(docs, keys, strict=True):
            entry = found.get(key) or self.cache.get(key)
            cached_flags.append(entry is not None)
            if entry is not None:
                found[key] = entry
            elif key not in todo:
                todo[key] = doc

        # Chunk every uncached document, then embed all their chunks (and the query) in one call so
        # the model sees one large batch instead of many small ones.
        chunker = self._chunker(options)
        plans: list[tuple[str, np.ndarray, list[str]]] = []
        texts: list[str] = []
        for key, doc in todo.items():
            spans: list[tuple[int, int, int, int]] = []
            chunk_texts: list[str] = []
            for chunk in chunker.chunk(doc.sections):
                if not chunk.text.strip():
                    continue
                page = -1 if chunk.page is None else chunk.page
                spans.append((chunk.start, chunk.end, chunk.section_index, page))
                chunk_texts.append(chunk.text)
            plans.append((key, np.asarray(spans, dtype=np.int64).reshape(-1, 4), chunk_texts))
            texts.extend(chunk_texts)
        if query_vector is None:
            texts.append(query)
        vectors = _unit(self._embed(texts)) if texts else np.zeros((0, 0), np.float32)
        if query_vector is None:
            q = vectors[-1]
            vectors = vectors[:-1]
        else:
            q = _unit(np.asarray(query_vector, dtype=np.float32).reshape(1, -1))[0]
        offset = 0
        for key, spans_arr, chunk_texts in plans:
            n = len(chunk_texts)
            entry = _Chunked(spans_arr, np.ascontiguousarray(vectors[offset : offset + n]))
            offset += n
            found[key] = entry
            self.cache.put(key, entry)
        log.debug("highlights: %d documents, %d embedded, %d chunks", len(docs), len(todo), offset)

        results = []
        for doc, key, cached in zip(docs, keys, cached_flags, strict=True):
            entry = found[key]
            results.append(self._best(doc, entry, q, k_per_document, max_characters, cached))
        return results

    @staticmethod
    def _best(
        doc: HighlightDocument,
        entry: _Chunked,
        q: np.ndarray,
        k: int,
        max_characters: int | None,
        cached: bool,
    ) -> DocumentHighlights:
        n = len(entry.spans)
        if n == 0:
            return DocumentHighlights(doc.id, (), 0, cached)
        scores = entry.vectors @ q
        order = np.argsort(-scores, kind="stable")[:k]
        by_index = {s.index: s for s in doc.sections}
        out = []
        for i in order:
            start, end, section_index, page = (int(v) for v in entry.spans[i])
            section = by_index.get(section_index, doc.sections[0])
            a, b = start - section.start, end - section.start
            if a >= 0 and b <= len(section.text):
                passage = section.text[a:b]
            else:  # a chunk across sections (the markdown splitter joins small ones)
                passage = document_text(doc.sections)[start:end]
            text = _trim(passage, max_characters)
            out.append(
                Highlight(
                    text=text,
                    score=float(scores[i]),
                    start=start,
                    end=start + len(text),
                    chunk_index=int(i),
                    section_index=section_index,
                    page=None if page < 0 else page,
                )
            )
        return DocumentHighlights(doc.id, tuple(out), n, cached)


def _as_documents(
    documents: Mapping[str, str] | Sequence[str] | Sequence[HighlightDocument],
) -> list[HighlightDocument]:
    if isinstance(documents, Mapping):
        return [HighlightDocument.from_text(str(k), v) for k, v in documents.items()]
    out = []
    for i, doc in enumerate(documents):
        if isinstance(doc, HighlightDocument):
            out.append(doc)
        elif isinstance(doc, str):
            out.append(HighlightDocument.from_text(str(i), doc))
        else:
            raise ConfigError(
                f"document {i} is a {type(doc).__name__}; give texts or HighlightDocuments"
            )
    return out


def highlights(
    query: str,
    documents: Mapping[str, str] | Sequence[str] | Sequence[HighlightDocument],
    *,
    model: Any = None,
    k_per_document: int = 3,
    max_characters: int | None = None,
    chunk_options: Any = None,
    engine: HighlightEngine | None = None,
) -> list[DocumentHighlights]:
    """Best chunks of each document for ``query``.

    ``documents`` is ``{id: text}``, a list of texts (ids "0", "1", …) or :class:`HighlightDocument`s.
    Pass an ``engine`` to keep its cache between calls; otherwise ``model`` (an Embedder or a spec,
    default: the configured model) is used once.
    """
    if engine is None:
        if model is None or isinstance(model, str):
            from ..models import load_model

            model = load_model(model)
        engine = HighlightEngine(model, cache_bytes=0)
    return engine.highlight(
        query,
        _as_documents(documents),
        k_per_document=k_per_document,
        max_characters=max_characters,
        options=chunk_options,
    )


__all__ = [
    "DocumentHighlights",
    "Highlight",
    "HighlightDocument",
    "HighlightEngine",
    "VectorCache",
    "highlights",
]
