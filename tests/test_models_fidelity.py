"""Vectors match sentence-transformers (the reference) on both backends; int8 stays close to fp32."""

from __future__ import annotations

import numpy as np
import pytest

from _models_support import (
    _memo,
    cosines,
    minilm,
    minilm_int8,
    minilm_torch,
    model_folder,
    models_cache,
    varied_texts,
)
from vectorstream.models import Embedder

__all__ = ["minilm", "minilm_int8", "minilm_torch", "model_folder", "models_cache"]

TEXTS = varied_texts(200)


@pytest.fixture(scope="module")
def reference(model_folder) -> np.ndarray:  # type: ignore[no-untyped-def]
    def encode() -> np.ndarray:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_folder), device="cpu")
        return model.encode(TEXTS, batch_size=32, convert_to_numpy=True)

    out = _memo("reference", encode)
    assert isinstance(out, np.ndarray)
    return out


def test_texts_cover_the_cases(minilm: Embedder) -> None:
    counts = minilm.count_tokens(TEXTS)
    assert len(TEXTS) >= 200
    assert "" in TEXTS
    assert sum(c > minilm.max_tokens for c in counts) >= 8  # over the limit: truncation path
    assert sum(c == 1 for c in counts) >= 10  # single words
    assert any(not t.isascii() for t in TEXTS)
    assert any("def " in t for t in TEXTS)


def test_onnx_matches_sentence_transformers(minilm: Embedder, reference: np.ndarray) -> None:
    cos = cosines(minilm.embed(TEXTS), reference)
    assert cos.min() >= 0.9999, f"worst text: {TEXTS[int(cos.argmin())][:80]!r}"


def test_torch_matches_sentence_transformers(minilm_torch: Embedder, reference: np.ndarray) -> None:
    assert minilm_torch.backend == "torch"
    cos = cosines(minilm_torch.embed(TEXTS), reference)
    assert cos.min() >= 0.9999, f"worst text: {TEXTS[int(cos.argmin())][:80]!r}"


def test_backends_share_the_fingerprint(minilm: Embedder, minilm_torch: Embedder) -> None:
    # Same vectors (within 1e-4) => same record ids whichever backend wrote them.
    assert minilm.fingerprint == minilm_torch.fingerprint


def test_int8_stays_close_to_fp32(minilm: Embedder, minilm_int8: Embedder) -> None:
    assert minilm_int8.quantized and minilm_int8.backend == "onnx"
    assert minilm_int8.fingerprint != minilm.fingerprint
    cos = cosines(minilm_int8.embed(TEXTS), minilm.embed(TEXTS))
    assert cos.mean() >= 0.99
    assert cos.min() >= 0.97
