"""The Embedder contract on the real packaged model (ONNX Runtime backend)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from _models_support import (
    MODEL_ID,
    cosines,
    minilm,
    model_folder,
    models_cache,
    short_texts,
    varied_texts,
)
from vectorstream.models import Embedder, token_budget_batches

__all__ = ["minilm", "model_folder", "models_cache"]  # fixtures imported for pytest


def test_loads_packaged_model_on_onnx(minilm: Embedder) -> None:
    assert minilm.model_id == MODEL_ID
    assert minilm.backend == "onnx"
    assert minilm.dim == 384
    assert minilm.max_tokens == 256
    assert minilm.num_special_tokens == 2
    assert minilm.tokenizer_path.name == "tokenizer.json"
    assert MODEL_ID in minilm.fingerprint


def test_embed_shape_dtype_and_unit_norm(minilm: Embedder) -> None:
    vectors = minilm.embed(["a cat sat on the mat", "", "Grüße 🙂"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_accepts_any_iterable_and_empty(minilm: Embedder) -> None:
    from_gen = minilm.embed(t for t in ["one", "two"])
    assert from_gen.shape == (2, 384)
    assert minilm.embed([]).shape == (0, 384)


def test_order_is_kept_despite_length_sorting(minilm: Embedder) -> None:
    texts = short_texts(24, seed=3) + varied_texts(6, seed=3)[-2:]
    together = minilm.embed(texts)
    one_by_one = np.vstack([minilm.embed([t]) for t in texts])
    assert cosines(together, one_by_one).min() > 0.99999
    reversed_ = minilm.embed(texts[::-1])[::-1]
    assert cosines(together, reversed_).min() > 0.99999


def test_non_string_item_raises_type_error_naming_index(minilm: Embedder) -> None:
    with pytest.raises(TypeError, match="input 2"):
        minilm.embed(["a", "b", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        minilm.embed("a bare string")


def test_truncation_is_counted(minilm: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    before = minilm.truncated_inputs
    long = "word " * 1000
    with caplog.at_level("WARNING", logger="vectorstream.models.embedder"):
        minilm.embed([long, "short", long])
    assert minilm.truncated_inputs == before + 2
    assert any("2 of 3 inputs exceed 256 tokens" in r.getMessage() for r in caplog.records)


def test_tokenize_truncates_and_count_tokens_does_not(minilm: Embedder) -> None:
    long = "word " * 1000
    (enc,) = minilm.tokenize([long])
    assert len(enc.ids) == 256
    assert minilm.count_tokens([long, "", "hello world"]) == [1000, 0, 2]
    # The public tokenizer copy neither truncates nor pads.
    assert len(minilm.tokenizer.encode(long).ids) == 1002


def test_embed_tokenized_matches_embed(minilm: Embedder) -> None:
    texts = [*short_texts(16, seed=11), "word " * 400]
    direct = minilm.embed(texts)
    via_tokens = minilm.embed_tokenized(minilm.tokenize(texts))
    np.testing.assert_allclose(direct, via_tokens, atol=1e-6)


def test_embed_tokenized_rejects_untruncated(minilm: Embedder) -> None:
    too_long = minilm.tokenizer.encode("word " * 400)
    with pytest.raises(ValueError, match="encoding 0"):
        minilm.embed_tokenized([too_long])


def test_concurrent_threads_get_their_own_results(minilm: Embedder) -> None:
    texts = short_texts(32, seed=5)
    expected = minilm.embed(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            # Each thread embeds a different rotation, so a mix-up between threads shows.
            rotated = texts[k:] + texts[:k]
            out = minilm.embed(rotated)
            results[k] = np.roll(out, k, axis=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for out in results.values():
        assert cosines(out, expected).min() > 0.99999


def test_token_budget_batches_cover_all_and_respect_budget() -> None:
    lengths = [5, 300, 17, 17, 2, 256, 90, 1, 40, 40, 40]
    batches = list(token_budget_batches(lengths, budget=300))
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert width == lengths[batch[0]]  # longest first
        assert len(batch) == 1 or len(batch) * width <= 300
        assert all(lengths[i] >= 0.75 * width for i in batch)  # padding waste bounded


def test_wordpiece_offsets_point_into_the_original_text(minilm: Embedder) -> None:
    text = "   hello world"
    (enc,) = minilm.tokenize([text])
    start, end = enc.offsets[1]  # after [CLS]
    assert text[start:end] == "hello"


def test_whitespace_sensitive_tokenizers_are_detected() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "▁hello": 1, "▁world": 2, "▁x": 3, "▁": 4}
    sentencepiece_like = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    sentencepiece_like.pre_tokenizer = pre_tokenizers.Metaspace()
    assert Embedder._edges_matter(sentencepiece_like)
    wordpiece_like = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    wordpiece_like.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not Embedder._edges_matter(wordpiece_like)


def test_public_names_are_exported() -> None:
    import vectorstream
    import vectorstream.models as models

    assert len(set(models.__all__)) == len(models.__all__)
    for name in models.__all__:
        assert getattr(models, name) is not None
    assert vectorstream.load_model is models.load_model
    assert vectorstream.Embedder is models.Embedder
