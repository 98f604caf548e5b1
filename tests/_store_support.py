"""Shared helpers for the LanceDB store, file sink and search tests (data made at run time)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from vectorstream.stores import matches
from vectorstream.types import Embedding, Record


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors (float32)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_records(
    vectors: np.ndarray,
    *,
    prefix: str = "r",
    sources: Sequence[str] = ("a.txt", "b.md", "c.pdf"),
    model: str = "fake-model",
) -> list[Record]:
    """One record per vector with varied fields, so filters have something to select."""
    out = []
    for i, vector in enumerate(vectors):
        out.append(
            Record(
                id=f"{prefix}{i}",
                embedding=Embedding(dense=vector),
                text=f"chunk {i} of {sources[i % len(sources)]}",
                source=sources[i % len(sources)],
                chunk_index=i,
                start=i * 10,
                end=i * 10 + 9,
                model=model,
                page=(i % 4) if i % 5 else None,
                headings=("Title", f"Part {i % 2}"),
                metadata={"lang": "en" if i % 2 else "fr", "n": i % 3, "flag": i % 7 == 0},
            )
        )
    return out


def row_fields(record: Record) -> dict[str, Any]:
    """A record as the flat row ``matches`` evaluates filters against."""
    return {
        "source": record.source,
        "page": record.page,
        "model": record.model,
        "chunk_index": record.chunk_index,
        "metadata": dict(record.metadata),
    }


def exact_topk(
    records: Sequence[Record], query: np.ndarray, k: int, where: dict[str, Any] | None = None
) -> list[tuple[str, float]]:
    """The reference answer: exact cosine over the records that pass ``matches``."""
    kept = [r for r in records if matches(row_fields(r), where)]
    if not kept:
        return []
    m = np.stack([np.asarray(r.embedding.as_dense(), np.float64) for r in kept])
    q = np.asarray(query, np.float64)
    scores = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    order = np.argsort(-scores, kind="stable")[:k]
    return [(kept[i].id, float(scores[i])) for i in order]


_WORD = re.compile(r"\w+")


class FakeEmbedder:
    """A deterministic bag-of-words embedder (a protocol seam for search tests).

    Each word maps to a fixed random direction (seeded by its hash); a text is the normalised sum,
    so texts sharing words are similar and the same text always gives the same vector.
    """

    def __init__(self, dim: int = 32, model_id: str = "fake-model") -> None:
        self.dim = dim
        self.model_id = model_id
        self.calls = 0

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        self.calls += 1
        rows = []
        for text in texts:
            v = np.zeros(self.dim)
            for word in _WORD.findall(text.lower()):
                v += self._word(word)
            norm = np.linalg.norm(v)
            rows.append(v / norm if norm else v)
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)


def text_records(
    texts: Sequence[str], embedder: Any, *, source_of: Callable[[int], str] | None = None
) -> list[Record]:
    """Records for ``texts`` embedded with ``embedder`` (one chunk per text)."""
    vectors = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    return [
        Record(
            id=f"t{i}",
            embedding=Embedding(dense=vectors[i]),
            text=text,
            source=source_of(i) if source_of else f"doc{i}.txt",
            chunk_index=0,
            start=0,
            end=len(text),
            model=embedder.model_id,
            metadata={"i": i},
        )
        for i, text in enumerate(texts)
    ]
