"""Late chunking: chunk vectors pooled from token states computed with the surrounding text.

The reference is transformers' own BertModel run on the same text (torch, not our graph): the
mean of the last hidden states of the span's tokens, normalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vectorstream as vs
from _models_support import minilm, model_folder, models_cache
from vectorstream.errors import ConfigError
from vectorstream.models import Embedder
from vectorstream.stores import open_store

__all__ = ["minilm", "model_folder", "models_cache"]  # fixtures imported for pytest

PROSE = (
    "Berlin is the capital of Germany. It has about 3.8 million inhabitants. "
    "The city is known for its museums and its history. Its river is the Spree. "
)


def _reference(folder: Path, text: str, spans: list[tuple[int, int]]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = batch.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        states = model(**batch).last_hidden_state[0].numpy()
    rows = []
    for a, b in spans:
        take = [i for i, (s, e) in enumerate(offsets) if e > s and a <= s < b]
        vector = states[take].mean(axis=0)
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows)


def _spans(text: str) -> list[tuple[int, int]]:
    out, at = [], 0
    for sentence in text.split(". "):
        sentence = sentence.strip()
        if not sentence:
            continue
        start = text.index(sentence, at)
        out.append((start, start + len(sentence)))
        at = start + len(sentence)
    return out


def test_a_short_text_matches_the_reference_span_means(
    minilm: Embedder, model_folder: Path
) -> None:
    spans = _spans(PROSE)
    (vectors,) = minilm.embed_late([minilm.late_plan(PROSE, spans)])
    expected = _reference(model_folder, PROSE, spans)
    assert vectors.shape == (len(spans), minilm.dim)
    cosines = np.einsum("ij,ij->i", vectors, expected)
    assert cosines.min() > 0.9999, cosines
    # Context changes the vector: "It has about 3.8 million inhabitants" alone says nothing of Berlin.
    alone = minilm.embed([PROSE[slice(*spans[1])]])[0]
    assert float(vectors[1] @ alone) < 0.999


def test_a_long_text_runs_in_overlapping_windows(minilm: Embedder, model_folder: Path) -> None:
    text = PROSE * 20  # about 700 tokens: windows of at most 254, a quarter overlapping
    spans = _spans(text)
    plan = minilm.late_plan(text, spans)
    assert len(plan.windows) >= 3
    assert all(len(w.ids) <= minilm.max_tokens for w in plan.windows)
    (vectors,) = minilm.embed_late([plan])
    assert vectors.shape == (len(spans), minilm.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The first window holds the start of the text with its own context: the first spans
    # equal the reference run over that window's text alone.
    first = plan.windows[0]
    end = max(b for _, b in first.offsets)
    head = [s for s in spans if s[1] <= end * 0.5]
    expected = _reference(model_folder, text[:end], head)
    assert np.einsum("ij,ij->i", vectors[: len(head)], expected).min() > 0.9999


def test_a_whitespace_span_is_refused(minilm: Embedder) -> None:
    with pytest.raises(ValueError, match="no token"):
        minilm.late_plan("word   word", [(4, 7)])


def test_ingest_with_late_chunking_stores_the_late_vectors(
    minilm: Embedder,
    model_folder: Path,
    tmp_path: Path,
) -> None:
    import lancedb

    doc = tmp_path / "docs" / "city.md"
    doc.parent.mkdir()
    text = "# Berlin\n\n" + PROSE + "\n\n## More\n\n" + PROSE  # one window of context
    doc.write_text(text)
    uri = f"lancedb://{tmp_path / 'store'}"
    report = vs.ingest(
        [doc.parent],
        store=uri,
        model=minilm,
        chunk_tokens=24,
        overlap=0,
        late_chunking=True,
        workers=0,
    )
    assert report.files_ok == 1 and report.chunks >= 4
    rows = lancedb.connect(str(tmp_path / "store")).open_table("documents").to_arrow().to_pylist()
    rows.sort(key=lambda r: r["chunk_index"])
    for row in rows:
        assert text[row["start"] : row["end"]] == row["text"]  # offsets into the file
    spans = [(r["start"], r["end"]) for r in rows]
    expected = _reference(model_folder, text, spans)
    got = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    assert np.einsum("ij,ij->i", got, expected).min() > 0.9999
    # Not the chunks' own vectors; turning late chunking off redoes every source.
    own = minilm.embed([r["text"] for r in rows])
    assert np.einsum("ij,ij->i", got, own).min() < 0.999
    again = vs.ingest(
        [doc.parent],
        store=uri,
        model=minilm,
        chunk_tokens=24,
        overlap=0,
        late_chunking=False,
        workers=0,
    )
    assert again.files_skipped == 0 and again.files_ok == 1


class _NoStates:
    model_id = "fake"
    fingerprint = "fake"
    dim = 4
    max_tokens = 512
    num_special_tokens = 2
    tokenizer_path = Path("x")


def test_late_chunking_needs_a_model_with_token_states(tmp_path: Path) -> None:
    from vectorstream.chunking import ChunkOptions
    from vectorstream.pipeline import Pipeline, PipelineOptions

    store = open_store(f"lancedb://{tmp_path}", "c", dim=4)
    with pytest.raises(ConfigError, match="late chunking"):
        Pipeline(_NoStates(), store, PipelineOptions(chunk=ChunkOptions(late_chunking=True)))  # type: ignore[arg-type]
