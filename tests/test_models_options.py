"""Output options: Matryoshka dimensions, normalisation, precisions, threads, fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _models_support import MODEL_ID, cosines, minilm, model_folder, models_cache, short_texts
from vectorstream import ConfigError, ModelError
from vectorstream.models import Embedder, available_cores, load_model
from vectorstream.models import _threads as threads_module

__all__ = ["minilm", "model_folder", "models_cache"]

TEXTS = [*short_texts(12, seed=21), "", "word " * 300]


def load(cache: Path, **options: object) -> Embedder:
    return load_model(MODEL_ID, cache_dir=cache, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def full(minilm: Embedder) -> np.ndarray:
    return minilm.embed(TEXTS)


def test_matryoshka_dimensions_truncate_and_renormalise(
    models_cache: Path, full: np.ndarray
) -> None:
    small = load(models_cache, dimensions=128)
    assert small.dim == 128
    out = small.embed(TEXTS)
    assert out.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    assert cosines(out, expected).min() > 0.99999


@pytest.mark.parametrize("dimensions", [0, 385])
def test_bad_dimensions_are_config_errors(models_cache: Path, dimensions: int) -> None:
    with pytest.raises(ConfigError, match="dimensions"):
        load(models_cache, dimensions=dimensions)


def test_normalize_false_gives_raw_pooled_vectors(models_cache: Path, full: np.ndarray) -> None:
    raw = load(models_cache, normalize=False).embed(TEXTS)
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / norms[:, None], full, atol=1e-5)


def test_float16(models_cache: Path, full: np.ndarray) -> None:
    out = load(models_cache, precision="float16").embed(TEXTS)
    assert out.dtype == np.float16 and out.shape == full.shape
    np.testing.assert_allclose(out.astype(np.float32), full, atol=1e-3)


def test_int8_precision_scales_each_vector(models_cache: Path, full: np.ndarray) -> None:
    out = load(models_cache, precision="int8").embed(TEXTS)
    assert out.dtype == np.int8 and out.shape == full.shape
    assert (np.abs(out.astype(np.int16)).max(axis=1) == 127).all()
    assert cosines(out.astype(np.float32), full).min() > 0.99


def test_binary_precision_packs_sign_bits(models_cache: Path, full: np.ndarray) -> None:
    out = load(models_cache, precision="binary").embed(TEXTS)
    assert out.dtype == np.uint8 and out.shape == (len(TEXTS), 384 // 8)
    np.testing.assert_array_equal(np.unpackbits(out, axis=1), (full > 0).astype(np.uint8))
    empty = load(models_cache, precision="binary").embed([])
    assert empty.shape == (0, 48)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"precision": "float64"}, "precision"),
        ({"backend": "tensorrt"}, "backend"),
        ({"backend": "torch", "quantized": True}, "quantized"),
        ({"token_budget": 0}, "token_budget"),
    ],
)
def test_bad_options_are_config_errors(models_cache: Path, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(models_cache, **options)


def test_fingerprint_is_stable_and_tracks_vector_settings(
    models_cache: Path, minilm: Embedder
) -> None:
    assert load(models_cache).fingerprint == minilm.fingerprint
    variants = {
        load(models_cache, dimensions=64).fingerprint,
        load(models_cache, normalize=False).fingerprint,
        load(models_cache, precision="float16").fingerprint,
        minilm.fingerprint,
    }
    assert len(variants) == 4
    # Threads change speed, not vectors.
    assert load(models_cache, threads=1).fingerprint == minilm.fingerprint


def test_onnx_threads_follow_the_cores_we_may_use(models_cache: Path, minilm: Embedder) -> None:
    options = minilm.backend_impl._session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == available_cores()
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    one = load(models_cache, threads=1)
    assert one.backend_impl._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_threads_from_environment(models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORSTREAM_THREADS", "1")
    model = load(models_cache)
    assert model.backend_impl._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_cgroup_quota_caps_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    monkeypatch.setattr(threads_module, "_CGROUP_V2", cpu_max)
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert available_cores() == 2  # 1.5 CPUs of quota rounds up
    cpu_max.write_text("max 100000\n")
    assert available_cores() == 8


def test_cache_dir_comes_from_the_environment(models_cache: Path) -> None:
    # The session fixture sets VECTORSTREAM_CACHE_DIR; no cache_dir argument here.
    model = load_model(MODEL_ID)
    assert Path(model.backend_impl.path).is_relative_to(models_cache)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "modes",
    [("mean",), ("cls",), ("max",), ("lasttoken",), ("mean_sqrt_len",), ("mean", "cls", "max")],
)
def test_pooling_matches_sentence_transformers(modes: tuple[str, ...]) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    from vectorstream.models._pooling import pool

    rng = np.random.default_rng(0)
    states = rng.standard_normal((3, 7, 8)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6], dtype=np.int64)
    st_names = {"mean_sqrt_len": "mean_sqrt_len_tokens"}
    reference = Pooling(8, pooling_mode=tuple(st_names.get(m, m) for m in modes))(
        {"token_embeddings": torch.from_numpy(states), "attention_mask": torch.from_numpy(mask)}
    )["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool(states, mask, modes), reference, rtol=1e-5, atol=1e-6)


def test_unwritable_cache_falls_back_to_torch(tmp_path: Path) -> None:
    # A cache path under a regular file can never be created: the automatic export fails, and
    # automatic mode carries on with torch instead of failing the user.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = load_model(MODEL_ID, cache_dir=blocker / "cache")
    assert model.backend == "torch"
    with pytest.raises(ModelError, match="cannot export"):
        load_model(MODEL_ID, backend="onnx", cache_dir=blocker / "cache")


def test_with_threads_is_the_same_model_on_another_session(minilm: Embedder) -> None:
    twin = minilm.with_threads(1)
    assert twin is not minilm and twin.threads == 1
    assert twin.fingerprint == minilm.fingerprint and twin.tokenizer is minilm.tokenizer
    texts = short_texts(40, 3)
    assert cosines(twin.embed(texts), minilm.embed(texts)).min() > 0.99999
    assert minilm.with_threads(minilm.threads or 1) is minilm  # nothing to change
