"""Late-interaction (ColBERT) models: every layout against its reference, both backends.

The reference by default is sentence-transformers' ``MultiVectorEncoder`` (it reads its own saves,
PyLate folders and Stanford ColBERT folders); ``test_pylate_fidelity`` (slow) runs PyLate itself
in a virtual environment of its own.
"""

from __future__ import annotations

import json
import logging
import os
import string
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _colbert_support import (
    minilm_folder,
    per_token_cosines,
    pylate_layout,
    st_colbert,
    stanford_layout,
    tiny_base,
)
from _models_support import varied_texts
from vectorstream.errors import ConfigError, ModelError
from vectorstream.models import load_model
from vectorstream.models._colbert import detect_multivector, load_multivector
from vectorstream.models._colbert_int8 import INT8_GATE_NAME
from vectorstream.models._colbert_model import ColbertEmbedder
from vectorstream.models._colbert_onnx import GRAPH_NAME

MIN_COSINE = 0.9999
TEXTS = varied_texts(200, seed=11)  # one word to over-limit paragraphs, unicode, code, empty


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("colbert")


@pytest.fixture(scope="module")
def cache(root: Path) -> Path:
    return root / "cache"


@pytest.fixture(scope="module")
def base(root: Path) -> Path:
    return tiny_base(root / "base")


# Folders: (name, builder). Each covers settings the others do not.
FOLDERS: dict[str, Any] = {
    # Text prompts ("[Q] " is three tokens here), fixed [MASK] expansion not attended,
    # punctuation skiplist on documents.
    "st": lambda base, out: st_colbert(
        base,
        out,
        dims=(24,),
        document_length=80,
        expansion={"strategy": "fixed", "attend": False, "length": 24},
        prompts={"query": "[Q] ", "document": "[D] "},
    ),
    # No expansion, a query ceiling, two Dense layers with bias and tanh, the skiplist on both
    # sides, no document length (the model's own limit, 512: the long texts are cut there).
    "st-plain": lambda base, out: st_colbert(
        base,
        out,
        dims=(48, 20),
        bias=True,
        activation="tanh",
        query_length=20,
        expansion=None,
        skiplist=(".", ",", "!", "?"),
        skiplist_tasks=("query", "document"),
    ),
    # "min" expansion: short queries padded to 12, longer ones kept up to the query length.
    "st-min": lambda base, out: st_colbert(
        base,
        out,
        dims=(16,),
        query_length=40,
        document_length=64,
        expansion={"strategy": "min", "attend": True, "length": 12},
        prompts={"query": "query: ", "passage": "passage: "},
    ),
    # No MultiVectorMask and no Normalize: only attended tokens come out, unnormalised.
    "st-bare": lambda base, out: st_colbert(
        base,
        out,
        dims=(24,),
        document_length=48,
        expansion={"strategy": "fixed", "attend": False, "length": 16},
        mask=False,
        normalize=False,
    ),
    # PyLate: marker tokens inserted, queries attend to their [MASK] expansion.
    "pylate": lambda base, out: pylate_layout(base, out, attend=True),
    # Stanford ColBERT: [unused0]/[unused1] markers, inline linear.weight, artifact.metadata.
    "stanford": lambda base, out: stanford_layout(base, out),
}


@pytest.fixture(scope="module")
def folders(root: Path, base: Path) -> dict[str, Path]:
    return {name: build(base, root / name) for name, build in FOLDERS.items()}


_REFERENCE: dict[str, tuple[list[Any], list[Any]]] = {}


def reference(path: Path) -> tuple[list[Any], list[Any]]:
    """sentence-transformers' (query, document) vectors for TEXTS, computed once per folder."""
    key = str(path)
    if key not in _REFERENCE:
        from sentence_transformers import MultiVectorEncoder

        model = MultiVectorEncoder(str(path), device="cpu")
        queries = model.encode_query(TEXTS, convert_to_numpy=True)
        documents = model.encode_document(TEXTS, convert_to_numpy=True)
        _REFERENCE[key] = (list(queries), list(documents))
    return _REFERENCE[key]


_LOADED: dict[tuple[str, str], ColbertEmbedder] = {}


def loaded(path: Path, backend: str, cache: Path) -> ColbertEmbedder:
    key = (str(path), backend)
    if key not in _LOADED:
        _LOADED[key] = load_multivector(path, f"test/{path.name}", backend=backend, cache=cache)
    return _LOADED[key]


# -- detection and reading ----------------------------------------------------------------------


def test_detect_every_layout_and_nothing_else(
    folders: dict[str, Path], base: Path, root: Path
) -> None:
    for name, path in folders.items():
        assert detect_multivector(path), name
    assert not detect_multivector(minilm_folder())  # a dense sentence-transformers model
    assert not detect_multivector(base)  # a plain transformers folder
    assert not detect_multivector(root / "missing")
    broken = root / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("{not json")
    (broken / "config.json").write_text('{"architectures": 3}')
    (broken / "config_sentence_transformers.json").write_text("[1, 2]")
    assert not detect_multivector(broken)


def test_load_model_routes_colbert_folders(folders: dict[str, Path], cache: Path) -> None:
    model = load_model(str(folders["pylate"]), cache_dir=cache)
    assert isinstance(model, ColbertEmbedder)
    assert (model.kind, model.backend, model.dim) == ("multivector", "onnx", 24)
    assert "multivector" in repr(model) and "onnx" in repr(model)
    tuned = load_model(
        str(folders["pylate"]),
        kind="multivector",
        cache_dir=cache,
        options={"precision": "float16", "query_length": 10},
    )
    (query,) = tuned.embed_queries(["what is a vector"])
    assert query.multivector.shape == (10, 24) and query.multivector.dtype == np.float16
    assert tuned.fingerprint != model.fingerprint


# -- fidelity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("name", list(FOLDERS))
def test_same_vectors_as_sentence_transformers(
    name: str, backend: str, folders: dict[str, Path], cache: Path
) -> None:
    path = folders[name]
    ref_queries, ref_documents = reference(path)
    model = loaded(path, backend, cache)
    assert model.backend == backend
    queries = model.embed_queries(TEXTS)
    documents = model.embed(TEXTS)
    assert all(e.kind == "multivector" and e.multivector.dtype == np.float32 for e in queries)
    for ours, theirs in ((queries, ref_queries), (documents, ref_documents)):
        cosines = per_token_cosines(ours, theirs)
        assert cosines.min() >= MIN_COSINE, (name, backend, cosines.min())
    # The unit length comes from the graph / torch head itself (where the model normalises).
    norms = np.linalg.norm(np.concatenate([e.multivector for e in documents]), axis=1)
    if name == "st-bare":
        assert np.abs(norms - 1.0).max() > 0.1
    else:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_layout_settings_reach_the_vectors(folders: dict[str, Path], cache: Path) -> None:
    """The settings each folder declares show in the output, not only in agreement."""
    st = loaded(folders["st"], "onnx", cache)
    # Fixed expansion: every query is exactly 24 vectors, long ones truncated.
    assert {e.multivector.shape[0] for e in st.embed_queries(TEXTS)} == {24}
    # The skiplist drops punctuation from documents: "[D] " + "a, b!" keeps [CLS] d a b [SEP].
    (doc,) = st.embed(["a, b!"])
    assert doc.multivector.shape == (5, 24)
    plain = loaded(folders["st-plain"], "onnx", cache)
    (query,) = plain.embed_queries(["a, b!"])  # skiplist on queries too, no expansion
    assert query.multivector.shape == (4, 20)
    assert max(e.multivector.shape[0] for e in plain.embed(TEXTS)) == 512
    low = loaded(folders["st-min"], "onnx", cache)
    lengths = {
        e.multivector.shape[0] for e in low.embed_queries(["short", " ".join(["word"] * 30)])
    }
    assert lengths == {12, 30 + 2 + 2}  # floor 12; "query: " is two tokens, plus [CLS]/[SEP]
    pylate = loaded(folders["pylate"], "onnx", cache)
    (doc,) = pylate.embed(["hello, world!"])  # [CLS] [D] hello world [SEP]
    assert doc.multivector.shape == (5, 24)
    assert pylate.num_special_tokens == 3 and pylate.max_tokens == 96
    stanford = loaded(folders["stanford"], "onnx", cache)
    assert {e.multivector.shape[0] for e in stanford.embed_queries(TEXTS[:20])} == {20}
    assert (stanford.dim, stanford.max_tokens) == (16, 72)


# -- the pipeline's protocol --------------------------------------------------------------------


def test_tokenize_and_embed_tokenized(folders: dict[str, Path], cache: Path) -> None:
    model = loaded(folders["pylate"], "onnx", cache)
    encodings = model.tokenize(TEXTS)
    assert max(len(e.ids) for e in encodings) == model.max_tokens
    marker = model.tokenizer.token_to_id("[D] ")
    assert all(e.ids[1] == marker for e in encodings)
    assert len(model.tokenize([""])[0].ids) == model.num_special_tokens
    # The counting tokenizer neither truncates nor adds special tokens.
    long_text = max(TEXTS, key=len)
    assert model.count_tokens([long_text])[0] > model.max_tokens
    assert model.tokenizer.truncation is None and model.tokenizer.padding is None
    direct = model.embed(TEXTS[:40])
    staged = model.embed_tokenized(encodings[:40])
    for a, b in zip(direct, staged, strict=True):
        np.testing.assert_array_equal(a.multivector, b.multivector)
    too_long = model.tokenizer.encode(long_text)
    with pytest.raises(ValueError, match="max_tokens"):
        model.embed_tokenized([too_long])
    assert model.embed([]) == [] and model.embed_queries([]) == []
    with pytest.raises(TypeError):
        model.embed("one string")


def test_batching_does_not_change_vectors(folders: dict[str, Path], cache: Path) -> None:
    path = folders["st"]
    small = load_multivector(path, "test/st", cache=cache, token_budget=64)
    big = loaded(path, "onnx", cache)
    for a, b in zip(small.embed(TEXTS[:60]), big.embed(TEXTS[:60]), strict=True):
        np.testing.assert_allclose(a.multivector, b.multivector, atol=2e-5)


def test_concurrent_calls(folders: dict[str, Path], cache: Path) -> None:
    model = loaded(folders["stanford"], "onnx", cache)
    expected = model.embed(TEXTS[:30])
    results: list[list[Any]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(model.embed(TEXTS[:30]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for result in results:
        for a, b in zip(result, expected, strict=True):
            np.testing.assert_allclose(a.multivector, b.multivector, atol=1e-5)


# -- options, caching, errors -------------------------------------------------------------------


def test_precision_and_length_overrides(folders: dict[str, Path], cache: Path) -> None:
    path = folders["stanford"]
    full = loaded(path, "onnx", cache)
    half = load_multivector(
        path, "test/stanford", cache=cache, precision="float16", query_length=8, document_length=16
    )
    (query,) = half.embed_queries(["a question about vectors"])
    (doc,) = half.embed([" ".join(["word"] * 50)])
    assert query.multivector.dtype == np.float16 and query.multivector.shape == (8, 16)
    assert doc.multivector.shape == (16, 16) and half.max_tokens == 16
    (doc32,) = full.embed(["a question about vectors"])
    (doc16,) = half.embed(["a question about vectors"])
    np.testing.assert_allclose(doc16.multivector.astype(np.float32), doc32.multivector, atol=2e-3)
    assert len({full.fingerprint, half.fingerprint}) == 2
    with pytest.raises(ConfigError):
        load_multivector(path, "x", cache=cache, precision="int8")
    with pytest.raises(ConfigError):
        load_multivector(path, "x", cache=cache, query_length=0)
    with pytest.raises(ConfigError, match="no room"):  # [CLS] [unused0] [SEP] fill 3
        load_multivector(path, "x", cache=cache, query_length=3)
    with pytest.raises(ConfigError):
        load_multivector(path, "x", cache=cache, backend="torch", quantized=True)
    with pytest.raises(ConfigError):
        load_multivector(path, "x", cache=cache, backend="tpu")


def test_graph_exported_once_and_shipped_graphs_used(
    folders: dict[str, Path], cache: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = folders["st-min"]
    first = loaded(path, "onnx", cache)
    assert first.graph_path is not None and first.graph_path.name == GRAPH_NAME
    stamp = first.graph_path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="vectorstream.models"):
        again = load_multivector(path, "test/st-min", cache=cache)
    assert again.graph_path == first.graph_path
    assert first.graph_path.stat().st_mtime_ns == stamp
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
    # A folder that ships the head graph runs it, with no export and no torch needed.
    shipped = root / "shipped"
    shipped.mkdir()
    for item in path.rglob("*"):
        target = shipped / item.relative_to(path)
        if item.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(item.read_bytes())
    (shipped / "onnx").mkdir()
    (shipped / "onnx" / "model.onnx").write_bytes(first.graph_path.read_bytes())
    own = load_multivector(shipped, "test/shipped", backend="onnx", cache=root / "empty-cache")
    assert own.graph_path == shipped / "onnx" / "model.onnx"
    assert not (root / "empty-cache").exists()
    for a, b in zip(own.embed(TEXTS[:20]), first.embed(TEXTS[:20]), strict=True):
        np.testing.assert_allclose(a.multivector, b.multivector, atol=1e-6)


def test_unsupported_folders(root: Path, base: Path, cache: Path) -> None:
    with pytest.raises(ModelError, match="not a ColBERT folder"):
        load_multivector(base, "plain", cache=cache)
    with pytest.raises(ModelError, match="does not exist"):
        load_multivector(root / "nowhere", "x", cache=cache)
    # A dense sentence-transformers folder: its Pooling module has no place in a ColBERT model.
    with pytest.raises(ModelError, match="Pooling"):
        load_multivector(minilm_folder(), "minilm", cache=cache)


# -- int8 ---------------------------------------------------------------------------------------


def test_int8_kept_when_close(folders: dict[str, Path], cache: Path) -> None:
    path = folders["pylate"]
    fp32 = loaded(path, "onnx", cache)
    int8 = load_multivector(path, "test/pylate", cache=cache, quantized=True)
    assert int8.quantized and int8.graph_path is not None and "int8" in int8.graph_path.name
    report = json.loads((int8.graph_path.parent / INT8_GATE_NAME).read_text())
    assert report["passed"] and report["mean_cosine"] >= 0.99
    cosines = per_token_cosines(
        int8.embed(TEXTS[:60]), [e.multivector for e in fp32.embed(TEXTS[:60])]
    )
    assert cosines.mean() >= 0.99
    assert int8.fingerprint != fp32.fingerprint


def test_int8_refused_when_it_loses_accuracy(root: Path, base: Path, cache: Path) -> None:
    """A hidden state with one huge component (zeroed by the projection) wrecks the per-tensor
    activation scale of the int8 projection: the gate must refuse it, and remember that."""
    from safetensors.torch import load_file, save_file

    path = st_colbert(base, root / "outlier", dims=(24,), seed=5)
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    state["encoder.layer.1.output.LayerNorm.weight"][0] = 5000.0
    state["encoder.layer.1.output.LayerNorm.bias"][0] = 5000.0
    save_file(state, str(weights))
    dense = path / "1_Dense" / "model.safetensors"
    dense_state = load_file(str(dense))
    dense_state["linear.weight"][:, 0] = 0.0
    save_file(dense_state, str(dense))
    fp32 = load_multivector(path, "test/outlier", cache=cache)
    assert fp32.graph_path is not None
    with pytest.raises(ModelError, match="int8 export of test/outlier refused"):
        load_multivector(path, "test/outlier", cache=cache, quantized=True)
    report = json.loads((fp32.graph_path.parent / INT8_GATE_NAME).read_text())
    assert not report["passed"] and report["mean_cosine"] < 0.99
    assert not (fp32.graph_path.parent / "colbert.int8.onnx").exists()
    with pytest.raises(ModelError, match="refused"):  # the verdict is reused, not recomputed
        load_multivector(path, "test/outlier", cache=cache, quantized=True)


# -- PyLate itself (slow: builds a virtual environment once) -----------------------------------

PYLATE_VENV = Path(__file__).parent / ".venvs" / "pylate"

_PYLATE_SCRIPT = """
import json, sys
import numpy as np
from pylate import models
folder, texts_file, out_file = sys.argv[1:4]
texts = json.load(open(texts_file))
model = models.ColBERT(folder, device="cpu")
queries = model.encode(texts, is_query=True, batch_size=32)
documents = model.encode(texts, is_query=False, batch_size=32)
arrays = {f"q{i}": np.asarray(v) for i, v in enumerate(queries)}
arrays.update({f"d{i}": np.asarray(v) for i, v in enumerate(documents)})
np.savez(out_file, **arrays)
"""


def _pylate_python() -> Path:
    """PyLate 1.6 in its own environment (it pins sentence-transformers 5.3 and transformers
    <= 5.3). Its indexing dependencies (fast-plaid, fastkmeans) pin other torch builds and are
    not needed to encode, so PyLate is installed without them, on the same CPU torch."""
    python = PYLATE_VENV / "bin" / "python"
    if python.is_file():
        probe = subprocess.run([str(python), "-c", "import pylate.models"], capture_output=True)
        if probe.returncode == 0:
            return python
    PYLATE_VENV.parent.mkdir(parents=True, exist_ok=True)
    # Keep the environment out of git whatever the repository's .gitignore says.
    (PYLATE_VENV.parent / ".gitignore").write_text("*\n")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PYLATE_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "--no-deps", "pylate==1.6.0"], check=True)
    subprocess.run(
        [
            *pip,
            "torch==2.13.0",
            "sentence-transformers==5.3.0",
            "transformers>=4.41.0,<=5.3.0",
            "datasets>=2.20.0",
            "scipy",
            "ujson==5.12.0",
        ],
        check=True,
    )
    return python


@pytest.mark.slow
@pytest.mark.parametrize("attend", [False, True])
def test_pylate_fidelity(attend: bool, root: Path, base: Path, cache: Path) -> None:
    """PyLate's own vectors for a folder in its layout, and for one it saved itself."""
    python = _pylate_python()
    texts_file = root / "texts.json"
    texts_file.write_text(json.dumps(TEXTS))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ours = pylate_layout(base, root / f"pl-{attend}", attend=attend, query_length=20)
    # PyLate writing the folder itself: ColBERT over the plain encoder, then save().
    saved = root / f"pl-saved-{attend}"
    subprocess.run(
        [
            str(python),
            "-c",
            "import sys, torch; from pylate import models; torch.manual_seed(0); "
            "m = models.ColBERT(sys.argv[1], embedding_size=20, device='cpu', query_length=18, "
            "document_length=60, attend_to_expansion_tokens=sys.argv[3] == 'True'); "
            "m.save(sys.argv[2])",
            str(base),
            str(saved),
            str(attend),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    settings = json.loads((saved / "config_sentence_transformers.json").read_text())
    assert settings["attend_to_expansion_tokens"] is attend
    assert settings["skiplist_words"] == list(string.punctuation)
    for folder in (ours, saved):
        out = root / f"{folder.name}.npz"
        subprocess.run(
            [str(python), "-c", _PYLATE_SCRIPT, str(folder), str(texts_file), str(out)],
            check=True,
            env=env,
            capture_output=True,
        )
        reference = np.load(out)
        for backend in ("onnx", "torch"):
            model = load_multivector(folder, f"test/{folder.name}", backend=backend, cache=cache)
            queries = model.embed_queries(TEXTS)
            documents = model.embed(TEXTS)
            for prefix, vectors in (("q", queries), ("d", documents)):
                theirs = [reference[f"{prefix}{i}"] for i in range(len(TEXTS))]
                cosines = per_token_cosines(vectors, theirs)
                assert cosines.min() >= MIN_COSINE, (folder.name, backend, prefix, cosines.min())
