"""Shared fixtures and data for the model-layer tests (tests/test_models*.py).

Graphs are exported once per test session into a private cache, so the default suite pays for one
ONNX export and one int8 quantisation, not one per test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vectorstream.models import Embedder, load_model, resolve_model

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Memo across test modules: pytest builds one fixture definition per module that imports these,
# so a session-scoped fixture alone would still export once per module.
_MEMO: dict[str, object] = {}


def _memo(key: str, make):  # type: ignore[no-untyped-def]
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private VECTORSTREAM_CACHE_DIR for the whole session (set in the environment too)."""
    path = _memo("cache", lambda: tmp_path_factory.mktemp("vectorstream-cache"))
    assert isinstance(path, Path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VECTORSTREAM_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def minilm(models_cache: Path) -> Embedder:
    """The packaged model on ONNX Runtime (exported into the session cache on first use)."""
    model = _memo("onnx", lambda: load_model(MODEL_ID, cache_dir=models_cache))
    assert isinstance(model, Embedder)
    return model


@pytest.fixture(scope="session")
def minilm_torch(models_cache: Path) -> Embedder:
    model = _memo("torch", lambda: load_model(MODEL_ID, backend="torch", cache_dir=models_cache))
    assert isinstance(model, Embedder)
    return model


@pytest.fixture(scope="session")
def minilm_int8(models_cache: Path, minilm: Embedder) -> Embedder:
    model = _memo("int8", lambda: load_model(MODEL_ID, quantized=True, cache_dir=models_cache))
    assert isinstance(model, Embedder)
    return model


@pytest.fixture(scope="session")
def model_folder() -> Path:
    return resolve_model(MODEL_ID).path


def varied_texts(n: int = 240, seed: int = 7) -> list[str]:
    """``n`` texts: one word, sentences, paragraphs over the token limit, unicode, code, empty."""
    rng = random.Random(seed)
    words = [
        "river",
        "bakery",
        "compiler",
        "orchard",
        "index",
        "train",
        "recipe",
        "council",
        "panel",
        "library",
        "lighthouse",
        "report",
        "trail",
        "database",
        "quantum",
        "melody",
        "harbour",
        "budget",
        "forecast",
        "glacier",
    ]
    unicode_bits = [
        "Grüße aus Köln",
        "naïve café",
        "東京タワー",
        "Привет, мир",
        "مرحبا",
        "🙂🚀✓",
        "ελληνικά",
        "한국어",
        "हिन्दी",
        "∑ x² ≤ ∞",
    ]
    code_bits = [
        "def f(x):\n    return x * 2\n",
        "SELECT * FROM t WHERE id = 1;",
        "for (i = 0; i < n; i++) { s += a[i]; }",
        '{"key": [1, 2, 3], "nested": {"a": null}}',
        "<div class='x'><p>hi</p></div>",
    ]
    texts: list[str] = ["", " ", "a", "hello"]
    while len(texts) < n:
        roll = rng.random()
        if roll < 0.15:
            texts.append(rng.choice(words))
        elif roll < 0.57:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))))
        elif roll < 0.65:
            # Well over 256 tokens: truncation must match the reference.
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(300, 600))))
        elif roll < 0.8:
            texts.append(" ".join(rng.choice(unicode_bits) for _ in range(rng.randint(1, 12))))
        else:
            texts.append("\n".join(rng.choice(code_bits) for _ in range(rng.randint(1, 6))))
    return texts[:n]


def short_texts(n: int, seed: int) -> list[str]:
    """Varied texts without the over-limit ones: cheap enough to embed many times."""
    return [t for t in varied_texts(4 * n, seed) if len(t) < 400][:n]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
