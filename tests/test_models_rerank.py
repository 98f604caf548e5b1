"""Rerankers against sentence-transformers' CrossEncoder on tiny random-weight models.

Every score is compared with ``CrossEncoder.predict`` on the same folder (absolute difference
<= 1e-4) over 240 varied pairs, many of them over the model's max length, on ONNX and torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _rerank_support import (
    MINILM_DIR,
    cross_encoder,
    save_cross_encoder,
    save_plain,
    varied_pairs,
)
from vectorstream.errors import ConfigError, ModelError
from vectorstream.models import detect_kind, load_model
from vectorstream.models._rerank import detect_rerank, load_rerank
from vectorstream.models._rerank_folder import read_rerank_folder
from vectorstream.models._rerank_model import Reranker, RerankResult

TOL = 1e-4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rerank")


@pytest.fixture(scope="module")
def cache(root: Path) -> Path:
    return root / "cache"


@pytest.fixture(scope="module")
def st_folder(root: Path) -> Path:
    """Saved by CrossEncoder.save: one label, Sigmoid recorded, max length 128 (positions)."""
    return save_cross_encoder(root / "st-ce", num_labels=1, max_positions=128, seed=11)


@pytest.fixture(scope="module")
def multi_folder(root: Path) -> Path:
    """A plain HF folder, three labels; max length 96 (positions under the tokenizer's 512)."""
    return save_plain(root / "hf-multi", num_labels=3, max_positions=96, seed=3)


@pytest.fixture(scope="module")
def single_plain(root: Path, st_folder: Path) -> Path:
    """The single-label weights as a plain HF folder: no sentence-transformers files at all."""
    target = root / "hf-single"
    target.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(st_folder / name, target / name)
    return target


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return varied_pairs(240)


@pytest.fixture(scope="module")
def st_reference(st_folder: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    return np.asarray(cross_encoder(st_folder).predict(pairs, batch_size=64))


@pytest.fixture(scope="module")
def st_onnx(st_folder: Path, cache: Path) -> Reranker:
    return load_rerank(st_folder, "tiny/st-ce", backend="onnx", cache=cache)


# -- detection and folder reading -------------------------------------------------------------


def test_detect_reads_the_folders_own_files(
    st_folder: Path, multi_folder: Path, tmp_path: Path
) -> None:
    assert detect_rerank(st_folder)
    assert detect_kind(st_folder) == "rerank"
    # A plain HF classifier says nothing about being a reranker: the caller names the kind.
    assert not detect_rerank(multi_folder)
    assert not detect_rerank(MINILM_DIR)  # a dense sentence-transformers model
    assert not detect_rerank(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    assert not detect_rerank(tmp_path)
    # A pre-v4 CrossEncoder folder records its activation in config.json only.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    config = json.loads((multi_folder / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (legacy / "config.json").write_text(json.dumps(config))
    assert detect_rerank(legacy)


def test_folder_settings_follow_sentence_transformers(st_folder: Path, multi_folder: Path) -> None:
    st = read_rerank_folder(st_folder)
    ce = cross_encoder(st_folder)
    assert (st.num_labels, st.max_tokens, st.activation) == (1, ce.max_seq_length, "sigmoid")
    multi = read_rerank_folder(multi_folder)
    ce_multi = cross_encoder(multi_folder)
    assert multi.num_labels == ce_multi.num_labels == 3
    assert multi.max_tokens == ce_multi.max_seq_length == 96
    assert multi.activation == "identity"


# -- fidelity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_scores_match_cross_encoder(
    backend: str,
    st_folder: Path,
    cache: Path,
    pairs: list[tuple[str, str]],
    st_reference: np.ndarray,
    st_onnx: Reranker,
) -> None:
    model = (
        st_onnx
        if backend == "onnx"
        else load_rerank(st_folder, "tiny/st-ce", backend="torch", cache=cache)
    )
    assert model.backend == backend and model.kind == "rerank"
    before = model.truncated_pairs
    got = model.score(pairs)
    assert got.shape == (len(pairs),) and got.dtype == np.float32
    np.testing.assert_allclose(got, st_reference, rtol=0, atol=TOL)
    # The comparison means something: scores spread, and many pairs were cut to the limit.
    assert float(np.std(st_reference)) > 0.05
    assert model.truncated_pairs - before >= 20
    assert all(0.0 < s < 1.0 for s in got)  # the recorded Sigmoid


def test_pair_encodings_are_cross_encoders(st_onnx: Reranker, pairs: list[tuple[str, str]]) -> None:
    ce = cross_encoder(st_onnx.path)
    sample = pairs[:60]
    features = ce.preprocess([list(p) for p in sample])
    for row, enc in enumerate(st_onnx.tokenize_pairs(sample)):
        n = int(features["attention_mask"][row].sum())
        assert enc.ids == features["input_ids"][row][:n].tolist()
        assert enc.type_ids == features["token_type_ids"][row][:n].tolist()


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_multi_label_plain_folder_matches_predict(
    backend: str, multi_folder: Path, cache: Path, pairs: list[tuple[str, str]]
) -> None:
    reference = np.asarray(cross_encoder(multi_folder).predict(pairs, batch_size=64))
    model = load_model(str(multi_folder), backend=backend, kind="rerank", cache_dir=cache)
    assert isinstance(model, Reranker) and model.dim == 3
    got = model.score(pairs)
    assert got.shape == reference.shape == (len(pairs), 3)
    np.testing.assert_allclose(got, reference, rtol=0, atol=TOL)
    # Ranking needs one score per pair, as CrossEncoder.rank does.
    with pytest.raises(ModelError, match="3 labels"):
        model.rerank("q", ["a", "b"])


def test_activation_choice_matches_cross_encoder(
    single_plain: Path, st_folder: Path, root: Path, cache: Path, pairs: list[tuple[str, str]]
) -> None:
    import torch

    sample = pairs[:40]
    # A plain single-label folder: CrossEncoder's default is a sigmoid.
    plain = load_rerank(single_plain, "tiny/plain", backend="torch", cache=cache)
    assert plain.activation == "sigmoid"
    np.testing.assert_allclose(
        plain.score(sample), cross_encoder(single_plain).predict(sample), rtol=0, atol=TOL
    )
    # The caller's choice wins, as predict(activation_fn=...) does.
    raw = load_rerank(
        single_plain, "tiny/plain", backend="torch", cache=cache, activation="identity"
    )
    reference = cross_encoder(single_plain, activation_fn=torch.nn.Identity()).predict(sample)
    np.testing.assert_allclose(raw.score(sample), reference, rtol=0, atol=TOL)
    assert raw.fingerprint != plain.fingerprint
    assert float(np.max(np.abs(raw.score(sample)))) > 1.0  # raw logits leave (0, 1)
    # Identity recorded in config_sentence_transformers.json, where CrossEncoder.save puts it.
    saved = root / "st-identity"
    shutil.copytree(st_folder, saved)
    st_config = json.loads((saved / "config_sentence_transformers.json").read_text())
    st_config["activation_fn"] = "torch.nn.modules.linear.Identity"
    (saved / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    model = load_rerank(saved, "tiny/identity", backend="torch", cache=cache)
    assert model.activation == "identity"
    np.testing.assert_allclose(
        model.score(sample), cross_encoder(saved).predict(sample), rtol=0, atol=TOL
    )
    # The pre-v4 key in config.json, as the ms-marco cross-encoders carry it.
    legacy = root / "legacy-identity"
    shutil.copytree(single_plain, legacy)
    config = json.loads((legacy / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (legacy / "config.json").write_text(json.dumps(config))
    model = load_rerank(legacy, "tiny/legacy", backend="torch", cache=cache)
    assert model.activation == "identity"
    np.testing.assert_allclose(
        model.score(sample), cross_encoder(legacy).predict(sample), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        1 / (1 + np.exp(-model.score(sample))), plain.score(sample), atol=1e-5
    )


def test_rerank_matches_cross_encoder_rank(st_onnx: Reranker, pairs: list[tuple[str, str]]) -> None:
    query = "a lighthouse report on the harbour budget"
    texts = list(dict.fromkeys(t for _, t in pairs[:60]))  # distinct: no ties to order by noise
    reference = cross_encoder(st_onnx.path).rank(query, texts)
    got = st_onnx.rerank(query, texts)
    assert all(isinstance(r, RerankResult) for r in got)
    assert [r.index for r in got] == [int(r["corpus_id"]) for r in reference]
    np.testing.assert_allclose(
        [r.score for r in got], [float(r["score"]) for r in reference], rtol=0, atol=TOL
    )
    assert [r.text for r in got] == [texts[r.index] for r in got]
    assert [r.index for r in st_onnx.rerank(query, texts, top_n=5)] == [r.index for r in got[:5]]
    assert len(st_onnx.rerank(query, texts, top_n=500)) == len(texts)
    assert st_onnx.rerank(query, []) == []
    with pytest.raises(ConfigError):
        st_onnx.rerank(query, texts, top_n=0)
    with pytest.raises(TypeError):
        st_onnx.rerank(query, "one string")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        st_onnx.score(("query", "text"))  # type: ignore[arg-type]


def test_batching_does_not_change_scores(
    st_folder: Path, cache: Path, pairs: list[tuple[str, str]], st_onnx: Reranker
) -> None:
    small = load_rerank(st_folder, "tiny/st-ce", backend="onnx", cache=cache, token_budget=300)
    sample = pairs[:100]
    np.testing.assert_allclose(small.score(sample), st_onnx.score(sample), rtol=0, atol=1e-6)
    # And input order is kept whatever the batches: scoring reversed input reverses the scores.
    np.testing.assert_allclose(
        small.score(sample[::-1]), st_onnx.score(sample)[::-1], rtol=0, atol=1e-6
    )


def test_contract_attributes(st_onnx: Reranker) -> None:
    assert st_onnx.model_id == "tiny/st-ce" and st_onnx.kind == "rerank"
    assert st_onnx.max_tokens == 128 and st_onnx.num_special_tokens == 3  # [CLS] q [SEP] t [SEP]
    assert st_onnx.dim == 1 and not st_onnx.quantized
    assert st_onnx.tokenizer.truncation is None and st_onnx.tokenizer.padding is None
    assert st_onnx.tokenizer_path == st_onnx.path / "tokenizer.json"
    text = "word " * 400
    assert len(st_onnx.tokenizer.encode(text).ids) > st_onnx.max_tokens
    assert all(len(e.ids) <= st_onnx.max_tokens for e in st_onnx.tokenize_pairs([("q", text)]))
    for part in ("tiny/st-ce", "onnx", "rerank"):
        assert part in repr(st_onnx)


def test_graph_is_exported_once_and_reused(st_folder: Path, cache: Path, st_onnx: Reranker) -> None:
    graphs = list(cache.glob("onnx/*/rerank.onnx"))
    assert graphs
    stamps = {g: g.stat().st_mtime_ns for g in graphs}
    again = load_rerank(st_folder, "tiny/st-ce", cache=cache)  # automatic backend: ONNX
    assert again.backend == "onnx" and again.fingerprint == st_onnx.fingerprint
    assert {g: g.stat().st_mtime_ns for g in graphs} == stamps


def test_int8_ranks_like_fp32(
    st_folder: Path, cache: Path, pairs: list[tuple[str, str]], st_reference: np.ndarray
) -> None:
    model = load_rerank(st_folder, "tiny/st-ce", quantized=True, cache=cache)
    assert model.quantized and model.backend == "onnx"
    report = json.loads(next(cache.glob("onnx/*/rerank-int8-gate.json")).read_text())
    assert report["spearman"] >= report["min_spearman"]
    got = model.score(pairs)
    order = np.corrcoef(np.argsort(np.argsort(got)), np.argsort(np.argsort(st_reference)))[0, 1]
    assert order > 0.95
    with pytest.raises(ConfigError):
        load_rerank(st_folder, "tiny/st-ce", quantized=True, backend="torch", cache=cache)


def test_bad_folders_and_options_are_refused(
    tmp_path: Path, multi_folder: Path, cache: Path
) -> None:
    with pytest.raises(ModelError, match="Pooling"):  # a dense model's modules
        load_model(str(MINILM_DIR), kind="rerank", cache_dir=cache)
    encoder = tmp_path / "encoder"
    shutil.copytree(multi_folder, encoder)
    config = json.loads((encoder / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (encoder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="ForSequenceClassification"):
        load_rerank(encoder, "x", cache=cache)
    with pytest.raises(ModelError, match="does not exist"):
        load_rerank(tmp_path / "missing", "x", cache=cache)
    pooled = tmp_path / "pooled"
    shutil.copytree(multi_folder, pooled)
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (pooled / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match="not supported"):
        load_rerank(pooled, "x", cache=cache)
    with pytest.raises(ConfigError):
        load_rerank(multi_folder, "x", cache=cache, activation="softmax")
    with pytest.raises(ConfigError):
        load_rerank(multi_folder, "x", cache=cache, backend="tpu")
