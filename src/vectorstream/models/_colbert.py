"""Late-interaction (ColBERT) models: one L2-normalised vector per token, scored with MaxSim.

    text ─▶ marker + tokens (+ [MASK] expansion for queries) ─▶ transformer ─▶ Dense ─▶ L2 norm
         ─▶ keep real tokens (queries: + expansion; documents: − skiplist) ─▶ (n_tokens, dim)

Three folder layouts, each read as its reference library reads it:

- sentence-transformers ``MultiVectorEncoder`` (``modules.json``: Transformer, Dense, MultiVectorMask,
  Normalize; lengths and ``query_expansion`` in ``sentence_bert_config.json``; the query/document
  prompts in ``config_sentence_transformers.json`` are prepended as text).
- PyLate (``modules.json``: Transformer and Dense; ``query_prefix``/``document_prefix``,
  ``query_length``, ``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens`` and
  ``skiplist_words`` in ``config_sentence_transformers.json``). The prefix is a token of the
  tokenizer, inserted after the first special token; queries are padded with [MASK] to
  ``query_length``.
- Stanford ColBERT (``config.json`` naming ``HF_ColBERT``; ``linear.weight`` beside the encoder
  weights; markers, lengths and ``attend_to_mask_tokens`` in ``artifact.metadata``).

The projection and the normalisation run inside the ONNX graph (output: batch × tokens × dim);
masking is a boolean selection on the way out.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import string
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError, MissingDependencyError, ModelError
from ..types import Embedding
from ._backends import (
    accepts_token_types,
    onnx_session,
    quiet_transformers,
    torch_available,
    torch_runtime,
)
from ._checkset import check_texts
from ._embedder import DEFAULT_TOKEN_BUDGET, pad_batch, token_budget_batches
from ._export import _temp_path, export_dir, export_graph, export_lock, quantize_int8
from ._folder import files_identity
from ._gate import MIN_MEAN_COSINE
from ._threads import available_cores

log = logging.getLogger("vectorstream.models.multivector")

KIND = "multivector"
PRECISIONS: tuple[str, ...] = ("float32", "float16")
GRAPH_NAME = "colbert.onnx"
INT8_GRAPH_NAME = "colbert.int8.onnx"
INT8_GATE_NAME = "colbert-int8-gate.json"
OUTPUT_NAME = "token_vectors"

# PyLate's and Stanford ColBERT's defaults when a folder leaves a setting out.
PYLATE_QUERY_LENGTH = 32
PYLATE_DOCUMENT_LENGTH = 180
PYLATE_QUERY_PREFIX = "[Q] "
PYLATE_DOCUMENT_PREFIX = "[D] "
STANFORD_QUERY_MARKER = "[unused0]"
STANFORD_DOCUMENT_MARKER = "[unused1]"

_ST_PREFIXES = ("sentence_transformers.models.", "sentence_transformers.base.modules.")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_PYLATE_KEYS = (
    "query_prefix",
    "document_prefix",
    "do_query_expansion",
    "attend_to_expansion_tokens",
    "skiplist_words",
)


# -- what a folder says ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DenseLayer:
    """One projection: ``activation(x @ W.T + b)`` (+ a residual), read from ``weights``."""

    in_features: int
    out_features: int
    bias: bool
    activation: str  # a torch.nn class path, e.g. torch.nn.modules.linear.Identity
    residual: bool
    weights: Path
    config: Path | None  # the layer's config.json (None for Stanford's inline weight)


@dataclass(frozen=True, slots=True)
class QueryExpansion:
    """[MASK] augmentation: queries padded with ``token`` up to ``length`` and scored there.

    ``fixed`` truncates queries to ``length`` too; ``min`` only pads (the query length caps).
    ``attend``: whether the encoder attends to the expansion positions.
    """

    strategy: str
    length: int
    attend: bool
    token: str | None = None


@dataclass(frozen=True, slots=True)
class ColbertFolder:
    """How one folder turns text into token vectors (see the module docstring)."""

    path: Path
    layout: str  # "sentence-transformers" | "pylate" | "stanford"
    transformer_path: Path
    tokenizer_path: Path
    hidden_size: int
    dense: tuple[DenseLayer, ...]
    normalize: bool
    query_marker: str | None  # a tokenizer token inserted after the first special token
    document_marker: str | None
    query_prompt: str  # text prepended (sentence-transformers prompts)
    document_prompt: str
    query_length: int | None  # None: the model's limit
    document_length: int | None
    expansion: QueryExpansion | None
    # Whether expansion positions are kept in the output even where the encoder does not attend
    # to them (a sentence-transformers model without a MultiVectorMask keeps only attended ones).
    scores_expansion: bool
    skiplist_words: tuple[str, ...]
    skiplist_tasks: tuple[str, ...]
    keep_only_token_ids: tuple[int, ...] | None
    model_max_tokens: int
    do_lower_case: bool
    weights_path: Path | None
    files: tuple[Path, ...]  # every file that decides the outputs

    @property
    def dim(self) -> int:
        return self.dense[-1].out_features if self.dense else self.hidden_size

    @property
    def strips(self) -> bool:
        # PyLate runs sentence-transformers 5, which strips every input; version 6 does not.
        return self.layout != "sentence-transformers"

    @property
    def graph_files(self) -> list[Path]:
        """The files that decide the graph (the tokenisation settings do not)."""
        files = [self.transformer_path / "config.json"]
        if self.weights_path is not None:
            files.append(self.weights_path)
        for layer in self.dense:
            files.append(layer.weights)
            if layer.config is not None:
                files.append(layer.config)
        return files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _peek_json(path: Path) -> Any:
    """A small JSON file, or None when it is missing or unreadable (for detection)."""
    try:
        if path.is_file() and path.stat().st_size < 4_000_000:
            return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return None


def _module_kind(entry: Any) -> str:
    kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
    return kind.rsplit(".", 1)[-1]


def detect_multivector(path: Path) -> bool:
    """Whether the folder's own files say it is a late-interaction (ColBERT) model."""
    try:
        path = Path(path)
        st_config = _peek_json(path / "config_sentence_transformers.json")
        if isinstance(st_config, dict):
            if st_config.get("model_type") in ("ColBERT", "MultiVectorEncoder"):
                return True
            if any(key in st_config for key in _PYLATE_KEYS):
                return True
        modules = _peek_json(path / "modules.json")
        if isinstance(modules, list):
            for entry in modules:
                kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
                if kind.startswith("pylate.") or kind.endswith(".MultiVectorMask"):
                    return True
        config = _peek_json(path / "config.json")
        if isinstance(config, dict) and "HF_ColBERT" in (config.get("architectures") or []):
            return True
    except (OSError, TypeError, AttributeError, ValueError):
        return False
    return False


def _weights_file(folder: Path) -> Path | None:
    return next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)


def _dense_layer(folder: Path, *, pylate: bool) -> DenseLayer:
    config_file = folder / "config.json"
    config = _read_json(config_file)
    weights = _weights_file(folder)
    if weights is None:
        raise ModelError(f"Dense module {folder} has no model.safetensors or pytorch_model.bin")
    try:
        in_features = int(config["in_features"])
        out_features = int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_file} does not give in_features/out_features") from exc
    # A config without an activation: PyLate's Dense defaults to identity, sentence-transformers'
    # to tanh.
    default = "torch.nn.modules.linear.Identity" if pylate else "torch.nn.modules.activation.Tanh"
    return DenseLayer(
        in_features=in_features,
        out_features=out_features,
        bias=bool(config.get("bias", True)),
        activation=str(config.get("activation_function") or default),
        residual=bool(config.get("use_residual", False)),
        weights=weights,
        config=config_file,
    )


def _model_limit(transformer_path: Path, st_config: dict[str, Any] | None) -> int:
    """sentence-transformers' limit: max_seq_length, else the tokenizer's and positions' smaller."""
    if st_config is not None and isinstance(st_config.get("max_seq_length"), int):
        return int(st_config["max_seq_length"])
    config = _peek_json(transformer_path / "config.json") or {}
    tok_config = _peek_json(transformer_path / "tokenizer_config.json") or {}
    limits = [config.get("max_position_embeddings"), tok_config.get("model_max_length")]
    ints = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(ints) if ints else 512


def _hidden_size(transformer_path: Path) -> int:
    config = _read_json(transformer_path / "config.json")
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not isinstance(hidden, int):
        raise ModelError(f"{transformer_path / 'config.json'} does not give hidden_size")
    return hidden


def _positive(value: Any, name: str, source: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{source}: {name} must be a positive integer, got {value!r}")
    return value


def _expansion(raw: Any, source: Path) -> QueryExpansion | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("strategy") not in ("fixed", "min"):
        raise ModelError(f"{source}: unsupported query_expansion {raw!r}")
    length = _positive(raw.get("length"), "query_expansion length", source)
    if length is None:
        raise ModelError(f"{source}: query_expansion needs a length")
    token = raw.get("token")
    return QueryExpansion(str(raw["strategy"]), length, bool(raw.get("attend", False)), token)


def read_colbert_folder(path: Path) -> ColbertFolder:
    """Parse a ColBERT folder in any of the three layouts; ModelError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    if (path / "modules.json").is_file():
        return _read_modules_folder(path)
    config = _peek_json(path / "config.json")
    if isinstance(config, dict) and "HF_ColBERT" in (config.get("architectures") or []):
        return _read_stanford_folder(path)
    raise ModelError(
        f"{path} is not a ColBERT folder: no modules.json (sentence-transformers / PyLate) and "
        "config.json does not name HF_ColBERT (Stanford ColBERT)"
    )


def _tokenizer_file(transformer_path: Path) -> Path:
    tokenizer_path = transformer_path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"{transformer_path} has no tokenizer.json; only fast-tokenizer folders are supported"
        )
    return tokenizer_path


def _common_files(transformer_path: Path) -> list[Path]:
    names = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    return [transformer_path / n for n in names]


def _read_modules_folder(path: Path) -> ColbertFolder:
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        raise ModelError(f"{path / 'modules.json'} is not a list of modules")
    st_file = path / "config_sentence_transformers.json"
    st = _read_json(st_file) if st_file.is_file() else {}
    pylate = st.get("model_type") == "ColBERT" or any(key in st for key in _PYLATE_KEYS)
    transformer_path: Path | None = None
    dense: list[DenseLayer] = []
    mask_config: dict[str, Any] | None = None
    normalize = False
    files = [path / "modules.json", st_file]
    for entry in modules:
        full = str(entry.get("type", "")) if isinstance(entry, dict) else ""
        kind = _module_kind(entry)
        sub = path / str(entry.get("path", "")) if isinstance(entry, dict) else path
        if kind == "Transformer" and transformer_path is None:
            transformer_path = sub
        elif kind == "Dense" and transformer_path is not None:
            dense.append(_dense_layer(sub, pylate=full.startswith("pylate.")))
        elif kind == "MultiVectorMask":
            mask_config = _read_json(sub / "config.json") if (sub / "config.json").is_file() else {}
            files.append(sub / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelError(
                f"{path / 'modules.json'}: module {full!r} is not supported in a ColBERT model "
                "(supported: Transformer, Dense, MultiVectorMask, Normalize)"
            )
    if transformer_path is None:
        raise ModelError(f"{path / 'modules.json'} has no Transformer module")
    tokenizer_path = _tokenizer_file(transformer_path)
    hidden = _hidden_size(transformer_path)
    bert_file = transformer_path / "sentence_bert_config.json"
    bert = _read_json(bert_file) if bert_file.is_file() else {}
    files += [*_common_files(transformer_path), bert_file]
    weights = _weights_file(transformer_path)
    common: dict[str, Any] = {
        "path": path,
        "transformer_path": transformer_path,
        "tokenizer_path": tokenizer_path,
        "hidden_size": hidden,
        "dense": tuple(dense),
        "model_max_tokens": _model_limit(transformer_path, None if pylate else bert),
        "do_lower_case": bool(bert.get("do_lower_case", False)),
        "weights_path": weights,
        "keep_only_token_ids": None,
    }
    if pylate:
        folder = _pylate_settings(st, st_file, common)
    else:
        folder = _st_settings(st, bert, bert_file, mask_config, normalize, common)
    all_files = [*files, *(f for layer in dense for f in (layer.weights, layer.config) if f)]
    if weights is not None:
        all_files.append(weights)
    return replace(folder, files=tuple(all_files))


def _pylate_settings(st: dict[str, Any], source: Path, common: dict[str, Any]) -> ColbertFolder:
    def setting(key: str, default: Any) -> Any:
        value = st.get(key)
        return default if value is None else value

    query_length = _positive(setting("query_length", PYLATE_QUERY_LENGTH), "query_length", source)
    expand = bool(setting("do_query_expansion", True))
    # PyLate attends to the expansion tokens only when it expands queries at all.
    attend = expand and bool(setting("attend_to_expansion_tokens", False))
    # PyLate prepends a prompt only when the config names a default one.
    prompts = st.get("prompts") or {}
    default_prompt = st.get("default_prompt_name")
    prompt = str(prompts.get(default_prompt) or "") if default_prompt else ""
    skiplist = setting("skiplist_words", list(string.punctuation))
    return ColbertFolder(
        layout="pylate",
        normalize=True,
        query_marker=setting("query_prefix", PYLATE_QUERY_PREFIX) or None,
        document_marker=setting("document_prefix", PYLATE_DOCUMENT_PREFIX) or None,
        query_prompt=prompt,
        document_prompt=prompt,
        query_length=query_length,
        document_length=_positive(
            setting("document_length", PYLATE_DOCUMENT_LENGTH), "document_length", source
        ),
        expansion=(
            QueryExpansion("fixed", query_length or PYLATE_QUERY_LENGTH, attend) if expand else None
        ),
        scores_expansion=True,
        skiplist_words=tuple(str(w) for w in skiplist),
        skiplist_tasks=("document",),
        files=(),
        **common,
    )


def _st_settings(
    st: dict[str, Any],
    bert: dict[str, Any],
    bert_file: Path,
    mask_config: dict[str, Any] | None,
    normalize: bool,
    common: dict[str, Any],
) -> ColbertFolder:
    prompts = st.get("prompts") or {}
    document_prompt = next(
        (prompts[k] for k in ("document", "passage", "corpus") if k in prompts), ""
    )
    mask = mask_config or {}
    tasks = mask.get("skiplist_tasks") or ["document"]
    keep_only = mask.get("keep_only_token_ids")
    return ColbertFolder(
        layout="sentence-transformers",
        normalize=normalize,
        query_marker=None,
        document_marker=None,
        query_prompt=str(prompts.get("query") or ""),
        document_prompt=str(document_prompt or ""),
        query_length=_positive(bert.get("query_length"), "query_length", bert_file),
        document_length=_positive(bert.get("document_length"), "document_length", bert_file),
        expansion=_expansion(bert.get("query_expansion"), bert_file),
        scores_expansion=mask_config is not None,
        skiplist_words=tuple(str(w) for w in mask.get("skiplist_words") or ()),
        skiplist_tasks=(tasks,) if isinstance(tasks, str) else tuple(str(t) for t in tasks),
        files=(),
        **{
            **common,
            "keep_only_token_ids": tuple(int(i) for i in keep_only) if keep_only else None,
        },
    )


def _read_stanford_folder(path: Path) -> ColbertFolder:
    tokenizer_path = _tokenizer_file(path)
    weights = _weights_file(path)
    if weights is None:
        raise ModelError(
            f"Stanford ColBERT folder {path} has no model.safetensors/pytorch_model.bin"
        )
    hidden = _hidden_size(path)
    metadata_file = path / "artifact.metadata"
    metadata = _read_json(metadata_file) if metadata_file.is_file() else {}
    if not metadata:
        log.warning("%s has no artifact.metadata: using Stanford ColBERT's defaults", path)
    out_features = _linear_rows(weights)
    query_length = _positive(
        metadata.get("query_maxlen") or PYLATE_QUERY_LENGTH, "query_maxlen", metadata_file
    )
    assert query_length is not None
    return ColbertFolder(
        path=path,
        layout="stanford",
        transformer_path=path,
        tokenizer_path=tokenizer_path,
        hidden_size=hidden,
        dense=(
            DenseLayer(
                hidden,
                out_features,
                False,
                "torch.nn.modules.linear.Identity",
                False,
                weights,
                None,
            ),
        ),
        normalize=True,
        query_marker=str(metadata.get("query_token_id") or STANFORD_QUERY_MARKER),
        document_marker=str(metadata.get("doc_token_id") or STANFORD_DOCUMENT_MARKER),
        query_prompt="",
        document_prompt="",
        query_length=query_length,
        document_length=_positive(
            metadata.get("doc_maxlen") or PYLATE_DOCUMENT_LENGTH, "doc_maxlen", metadata_file
        ),
        # Stanford ColBERT always pads queries with [MASK] (its scoring relies on it).
        expansion=QueryExpansion(
            "fixed", query_length, bool(metadata.get("attend_to_mask_tokens"))
        ),
        scores_expansion=True,
        skiplist_words=(
            tuple(string.punctuation) if metadata.get("mask_punctuation", True) else ()
        ),
        skiplist_tasks=("document",),
        keep_only_token_ids=None,
        model_max_tokens=_model_limit(path, None),
        do_lower_case=False,
        weights_path=weights,
        files=(*_common_files(path), metadata_file, weights),
    )


def _linear_rows(weights: Path) -> int:
    """Output width of Stanford ColBERT's inline ``linear.weight``, read without loading tensors."""
    if weights.suffix == ".safetensors":
        try:
            with weights.open("rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(size))
            return int(header["linear.weight"]["shape"][0])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(f"{weights} has no readable linear.weight: {exc}") from exc
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        return int(state["linear.weight"].shape[0])
    except Exception as exc:  # torch.load raises many kinds for a bad file
        raise ModelError(f"{weights} has no readable linear.weight: {exc}") from exc


# -- tokenising -----------------------------------------------------------------------------------


def _load_tokenizer_json(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a tokenizer.json")
    return data


def _tokenizer_from(data: dict[str, Any], source: Path) -> tokenizers.Tokenizer:
    try:
        tok = tokenizers.Tokenizer.from_str(json.dumps(data))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {source}: {exc}") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok


_MARKER_KEY = "vectorstream:marker"


def _special(key: str, type_id: int = 0) -> dict[str, Any]:
    return {"SpecialToken": {"id": key, "type_id": type_id}}


def _sequence(name: str, type_id: int) -> dict[str, Any]:
    return {"Sequence": {"id": name, "type_id": type_id}}


def _with_marker(processor: Any, marker: str, marker_id: int) -> dict[str, Any]:
    """The post-processor with ``marker`` inserted right after the first special token, where
    PyLate and Stanford ColBERT insert it (so truncation leaves room for it, as theirs does)."""
    kind = processor.get("type") if isinstance(processor, dict) else None
    if kind == "Sequence":
        parts = list(processor.get("processors") or [])
        for i, part in enumerate(parts):
            if isinstance(part, dict) and part.get("type") in (
                "TemplateProcessing",
                "BertProcessing",
                "RobertaProcessing",
            ):
                parts[i] = _with_marker(part, marker, marker_id)
                return {**processor, "processors": parts}
    elif kind in ("BertProcessing", "RobertaProcessing"):
        (cls, cls_id), (sep, sep_id) = processor["cls"], processor["sep"]
        single = [_special(cls), _sequence("A", 0), _special(sep)]
        if kind == "BertProcessing":
            pair = [*single, _sequence("B", 1), _special(sep, 1)]
        else:
            pair = [*single, _special(sep), _sequence("B", 0), _special(sep)]
        template = {
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": {
                cls: {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep: {"id": sep, "ids": [sep_id], "tokens": [sep]},
            },
        }
        return _with_marker(template, marker, marker_id)
    elif kind == "TemplateProcessing":
        out = dict(processor)
        for name in ("single", "pair"):
            items = list(processor.get(name) or [])
            if name == "pair" and not items:
                continue
            if not items or "SpecialToken" not in items[0]:
                raise ModelError(
                    "the tokenizer adds no leading special token, so there is nowhere to insert "
                    f"the marker {marker!r}"
                )
            type_id = items[0]["SpecialToken"].get("type_id", 0)
            out[name] = [items[0], _special(_MARKER_KEY, type_id), *items[1:]]
        out["special_tokens"] = {
            **processor.get("special_tokens", {}),
            _MARKER_KEY: {"id": _MARKER_KEY, "ids": [marker_id], "tokens": [marker]},
        }
        return out
    raise ModelError(
        f"cannot insert the marker {marker!r}: unsupported tokenizer post-processor {kind!r}"
    )


def _token_id(tok: tokenizers.Tokenizer, token: str) -> int | None:
    """The id of ``token`` as one piece (vocabulary or added token), as the references look it up."""
    found = tok.token_to_id(token)
    return int(found) if found is not None else None


def _named_token(transformer_path: Path, name: str) -> str | None:
    """A special token named in tokenizer_config.json / special_tokens_map.json (e.g. mask_token)."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        value = (_peek_json(transformer_path / file) or {}).get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(frozen=True, slots=True, eq=False)
class _Side:
    """How one side (queries or documents) is tokenised and which token vectors it keeps."""

    name: str
    tokenizer: tokenizers.Tokenizer  # marker in its post-processor, truncating at max_length
    prompt: str
    strip: bool
    lower: bool
    max_length: int
    expansion: QueryExpansion | None
    expansion_id: int | None
    scores_expansion: bool
    skip_ids: np.ndarray | None
    keep_only_ids: np.ndarray | None

    @property
    def floor(self) -> int:
        return self.expansion.length if self.expansion is not None else 0

    def prepare(self, text: str) -> str:
        if self.strip:
            text = text.strip()
        text = self.prompt + text
        return text.lower() if self.lower else text


def _edges_matter(tok: tokenizers.Tokenizer) -> bool:
    """Whether whitespace around a text changes its tokens (SentencePiece, byte-level BPE)."""
    for core in ("hello world", "x"):
        plain = tok.encode(core).ids
        for padded in (f" {core}", f"{core} ", f"\n\t{core}  \n"):
            if tok.encode(padded).ids != plain:
                return True
    return False


def _expansion_id(folder: ColbertFolder, tok: tokenizers.Tokenizer) -> int:
    expansion = folder.expansion
    assert expansion is not None
    if expansion.token is not None:
        found = _token_id(tok, expansion.token)
        if found is None:
            raise ModelError(f"query expansion token {expansion.token!r} is not in the tokenizer")
        return found
    # The references' chain: the mask token (encoders), else end-of-sequence (decoders), else pad.
    for name, fallbacks in (
        ("mask_token", ("[MASK]", "<mask>")),
        ("eos_token", ()),
        ("pad_token", ("[PAD]", "<pad>")),
    ):
        for token in (_named_token(folder.transformer_path, name), *fallbacks):
            if token is not None and (found := _token_id(tok, token)) is not None:
                return found
    raise ModelError(f"{folder.path}: the tokenizer has no [MASK] token to expand queries with")


def _skip_ids(folder: ColbertFolder, tok: tokenizers.Tokenizer) -> np.ndarray | None:
    if not folder.skiplist_words:
        return None
    ids: list[int] = []
    missing: list[str] = []
    for word in folder.skiplist_words:
        # Words that are not one token are left out, as sentence-transformers does (PyLate would
        # look them up as [UNK] and so drop every unknown token of a document).
        found = _token_id(tok, word)
        if found is None:
            missing.append(word)
        else:
            ids.append(found)
    if missing:
        log.debug("skiplist words that are not single tokens, ignored: %s", missing)
    return np.asarray(sorted(set(ids)), dtype=np.int64) if ids else None


def _make_side(
    folder: ColbertFolder,
    data: dict[str, Any],
    *,
    query: bool,
    strip: bool,
    max_length: int,
) -> _Side:
    name = "query" if query else "document"
    marker = folder.query_marker if query else folder.document_marker
    prompt = folder.query_prompt if query else folder.document_prompt
    base = _tokenizer_from(data, folder.tokenizer_path)
    if marker is not None:
        # PyLate saves the marker with its trailing space ("[Q] "); Stanford uses a vocabulary
        # token ("[unused0]"). A folder whose tokenizer lacks it gets it as text, as
        # sentence-transformers does.
        marker_id = _token_id(base, marker)
        if marker_id is None and marker.strip() and marker.strip() != marker:
            marker_id = _token_id(base, marker.strip())
        if marker_id is None:
            log.warning(
                "%s: marker %r is not a token of the tokenizer; prepending it as text",
                folder.path,
                marker,
            )
            prompt = marker + prompt
        else:
            data = {
                **data,
                "post_processor": _with_marker(data.get("post_processor"), marker, marker_id),
            }
    tok = _tokenizer_from(data, folder.tokenizer_path)
    expansion = folder.expansion if query else None
    if expansion is not None and expansion.strategy == "fixed":
        max_length = expansion.length
    elif expansion is not None:
        max_length = max(max_length, expansion.length)
    added = tok.num_special_tokens_to_add(False)
    if max_length <= added:
        raise ConfigError(
            f"{name} length {max_length} leaves no room for text after {added} special tokens"
        )
    tok.enable_truncation(max_length=max_length)
    skips = name in folder.skiplist_tasks
    keep_only = folder.keep_only_token_ids
    return _Side(
        name=name,
        tokenizer=tok,
        prompt=prompt,
        strip=strip,
        lower=folder.do_lower_case,
        max_length=max_length,
        expansion=expansion,
        expansion_id=_expansion_id(folder, base) if expansion is not None else None,
        scores_expansion=folder.scores_expansion or (expansion is not None and expansion.attend),
        skip_ids=_skip_ids(folder, base) if skips else None,
        keep_only_ids=(np.asarray(keep_only, dtype=np.int64) if keep_only and not query else None),
    )


# -- running the graph ----------------------------------------------------------------------------


class _OnnxRunner:
    """The exported graph (transformer + projection + normalisation) on ONNX Runtime."""

    name = "onnx"
    device = "cpu"

    def __init__(
        self,
        path: Path,
        threads: int | None,
        dim: int,
        renormalize: bool,
        *,
        session: Any = None,
    ) -> None:
        self.path = path
        self._session = session if session is not None else onnx_session(path, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ModelError(f"ONNX graph {path} lacks inputs {sorted(missing)}")
        output = self._session.get_outputs()[0]
        width = output.shape[-1] if len(output.shape) == 3 else None
        if width is None or (isinstance(width, int) and width != dim):
            raise ModelError(
                f"ONNX graph {path}: first output {output.name!r} must be token vectors "
                f"(batch, tokens, {dim}), got shape {output.shape}"
            )
        self._output = output.name
        self._renormalize = renormalize
        self.threads = threads if threads and threads > 0 else available_cores()

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (vectors,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._renormalize:
            # A graph shipped with the folder may end at the projection.
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


class _TorchRunner:
    """The same head as the graph, run by torch (CUDA when available)."""

    name = "torch"

    def __init__(self, folder: ColbertFolder, threads: int | None) -> None:
        self._torch, self.device = torch_runtime(threads)
        self.threads = threads
        self._model = _torch_head(folder, eager=False).to(self.device).eval()

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        args = [torch.from_numpy(a).to(self.device) for a in (ids, mask, types)]
        try:
            with torch.inference_mode():
                out = self._model(*args)
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def _activation(name: str) -> Any:
    import torch

    module_name, _, cls_name = name.rpartition(".")
    if not module_name.startswith("torch."):
        raise ModelError(f"activation {name!r} is not a torch.nn module; only torch.* ones load")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"unknown activation {name!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelError(f"activation {name!r} is not a torch.nn.Module class")
    return cls()


def _state_dict(weights: Path) -> dict[str, Any]:
    import torch

    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(weights)))
        return dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    except Exception as exc:  # safetensors and torch.load raise many kinds for bad files
        raise ModelError(f"cannot read weights {weights}: {exc}") from exc


def _torch_dense(layer: DenseLayer, stanford: bool) -> Any:
    import torch

    class Dense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
            self.activation = _activation(layer.activation)
            if layer.residual and layer.in_features != layer.out_features:
                self.residual = torch.nn.Linear(layer.in_features, layer.out_features, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activation(self.linear(x))
            if layer.residual:
                out = out + (self.residual(x) if hasattr(self, "residual") else x)
            return out

    dense = Dense()
    state = _state_dict(layer.weights)
    if stanford:
        state = {"linear.weight": state["linear.weight"]}
    try:
        dense.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"Dense weights {layer.weights} do not fit the layer: {exc}") from exc
    return dense


@contextlib.contextmanager
def _quiet_load_report(quiet: bool) -> Iterator[None]:
    """Stanford ColBERT keeps ``linear.weight`` beside the encoder's: transformers reports it as
    unexpected on every load, which is expected here (the projection is loaded separately)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _torch_head(folder: ColbertFolder, *, eager: bool) -> Any:
    """transformer → Dense layers → L2 normalisation, as one torch module."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    try:
        # Eager attention exports plain MatMul/Softmax that ORT fuses (see _export.export_fp32).
        kwargs = {"attn_implementation": "eager"} if eager else {}
        with quiet_transformers(), _quiet_load_report(folder.layout == "stanford"):
            encoder = AutoModel.from_pretrained(str(folder.transformer_path), **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(f"transformers cannot load {folder.transformer_path}: {exc}") from exc
    layers = [_torch_dense(layer, folder.layout == "stanford") for layer in folder.dense]
    accepts_types = accepts_token_types(encoder)
    normalize = folder.normalize

    class ColbertHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.layers = torch.nn.ModuleList(layers)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if accepts_types:
                kwargs["token_type_ids"] = token_type_ids
            x = self.encoder(**kwargs)[0]
            for layer in self.layers:
                x = layer(x)
            if normalize:
                x = torch.nn.functional.normalize(x, p=2, dim=-1)
            return x

    return ColbertHead().float().eval()


def _export(folder: ColbertFolder, target: Path) -> Path:
    """Export the whole head to ``target`` once (other processes wait on the lock)."""
    if target.is_file():
        return target
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    with export_lock(target.parent):
        if target.is_file():
            return target
        log.warning("exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target)
        head = _torch_head(folder, eager=True)
        ids = torch.ones((2, 8), dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0  # traced with padding, so no all-ones shortcut is baked in
        axes = {0: "batch", 1: "sequence"}
        export_graph(
            head,
            (ids, mask, torch.zeros_like(ids)),
            target,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                OUTPUT_NAME: axes,
            },
        )
    return target


# -- the model ------------------------------------------------------------------------------------


class ColbertEmbedder:
    """A loaded late-interaction model: ``embed`` (documents) and ``embed_queries`` return one
    ``Embedding(multivector=(n_tokens, dim))`` per text. Safe to call from several threads.

    Build it with ``load_model(spec, kind="multivector")`` or :func:`load_multivector`.
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: ColbertFolder,
        runner: Any,
        identity: str,
        quantized: bool = False,
        precision: str = "float32",
        query_length: int | None = None,
        document_length: int | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if token_budget < 1:
            raise ConfigError(f"token_budget must be positive, got {token_budget}")
        for name, value in (("query_length", query_length), ("document_length", document_length)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}")
        if query_length is not None:
            expansion = folder.expansion
            if expansion is not None and expansion.strategy == "fixed":
                expansion = replace(expansion, length=query_length)
            elif expansion is not None:
                # "min": the override is the ceiling, and the floor stays under it.
                expansion = replace(expansion, length=min(expansion.length, query_length))
            folder = replace(folder, query_length=query_length, expansion=expansion)
        if document_length is not None:
            folder = replace(folder, document_length=document_length)
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._runner = runner
        self.backend: str = runner.name
        self.quantized = quantized
        self.precision = precision
        self.token_budget = token_budget
        self.dim: int = folder.dim
        self.max_tokens: int = folder.document_length or folder.model_max_tokens

        self.tokenizer_path: Path = folder.tokenizer_path
        data = _load_tokenizer_json(folder.tokenizer_path)
        self.tokenizer: tokenizers.Tokenizer = _tokenizer_from(data, folder.tokenizer_path)
        strip = folder.strips and _edges_matter(self.tokenizer)
        self._document = _make_side(
            folder, data, query=False, strip=strip, max_length=self.max_tokens
        )
        self._query = _make_side(
            folder,
            data,
            query=True,
            strip=strip,
            max_length=folder.query_length or folder.model_max_tokens,
        )
        self.query_max_tokens: int = self._query.max_length
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)}"
            f";precision={precision};query_tokens={self.query_max_tokens}"
            f";document_tokens={self.max_tokens}"
        )
        # Tokens a document gets besides its own: special tokens, the marker and a text prompt.
        empty = self._document.tokenizer.encode(self._document.prepare(""))
        self.num_special_tokens: int = len(empty.ids)
        self._pad_id = self._pad_token_id()

        self._lock = threading.Lock()
        self.truncated_inputs = 0  # documents cut to max_tokens since load (all threads)
        self.embedded_inputs = 0

    def _pad_token_id(self) -> int:
        for token in (_named_token(self.folder.transformer_path, "pad_token"), "[PAD]", "<pad>"):
            if token is not None and (found := self.tokenizer.token_to_id(token)) is not None:
                return int(found)
        return 0

    def __repr__(self) -> str:
        return (
            f"ColbertEmbedder({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"dim={self.dim}, max_tokens={self.max_tokens}, query_tokens={self.query_max_tokens}, "
            f"quantized={self.quantized}, precision={self.precision!r})"
        )

    @property
    def threads(self) -> int | None:
        value = getattr(self._runner, "threads", None)
        return int(value) if isinstance(value, int) else None

    @property
    def graph_path(self) -> Path | None:
        """The ONNX graph this model runs (None on the torch backend)."""
        path = getattr(self._runner, "path", None)
        return path if isinstance(path, Path) else None

    # -- tokenising -------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Iterable[object]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("pass an iterable of strings, not one string; wrap it in a list")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return items  # type: ignore[return-value]

    def _encode(self, side: _Side, texts: Iterable[object]) -> list[tokenizers.Encoding]:
        items = self._check_texts(texts)
        if not items:
            return []
        return side.tokenizer.encode_batch([side.prepare(t) for t in items])

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Encode documents for the model: marker and special tokens added, truncated to
        ``max_tokens``. Offsets refer to the text after any text prompt (sentence-transformers
        layouts prepend the document prompt as text)."""
        encodings = self._encode(self._document, texts)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            with self._lock:
                self.truncated_inputs += truncated
                total = self.truncated_inputs
            log.warning(
                "%d of %d documents exceed %d tokens and were truncated (%d since load)",
                truncated,
                len(encodings),
                self.max_tokens,
                total,
            )
        return encodings

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens and without truncation."""
        items = self._check_texts(texts)
        if not items:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(items, add_special_tokens=False)]

    # -- embedding --------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> list[Embedding]:
        """Document vectors, one ``Embedding(multivector=(n_tokens, dim))`` per text, input order."""
        return self.embed_tokenized(self.tokenize(self._check_texts(texts)))

    def embed_queries(self, texts: Iterable[str]) -> list[Embedding]:
        """Query vectors: query marker, [MASK] expansion and query length as the model says."""
        return self._run(self._query, self._encode(self._query, texts))

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        """Document vectors for encodings from :meth:`tokenize` (batched by token budget inside)."""
        for i, enc in enumerate(encodings):
            if len(enc.ids) > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {len(enc.ids)} tokens, more than max_tokens="
                    f"{self.max_tokens}; build encodings with model.tokenize(), which truncates"
                )
        return self._run(self._document, encodings)

    def _run(self, side: _Side, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        n = len(encodings)
        lengths = [len(e.ids) for e in encodings]
        floor = side.floor
        widths = [max(k, floor, 1) for k in lengths]
        out: list[Embedding | None] = [None] * n
        dtype = np.float16 if self.precision == "float16" else np.float32
        for batch in token_budget_batches(widths, self.token_budget):
            width = widths[batch[0]]
            ids, mask, types = pad_batch(encodings, batch, self._pad_id, width)
            keep = mask.astype(bool)
            if side.expansion is not None:
                # Pads below the floor become the expansion token, scored (normally) whether
                # or not the encoder attends to them.
                expand = ~keep & (np.arange(width) < floor)[None, :]
                assert side.expansion_id is not None
                ids[expand] = side.expansion_id
                if side.expansion.attend:
                    mask[expand] = 1
                if side.scores_expansion:
                    keep |= expand
            if side.skip_ids is not None:
                keep &= ~np.isin(ids, side.skip_ids)
            if side.keep_only_ids is not None:
                keep &= np.isin(ids, side.keep_only_ids)
            vectors = self._runner.run(ids, mask, types)
            for row, i in enumerate(batch):
                out[i] = Embedding(
                    multivector=np.ascontiguousarray(vectors[row][keep[row]], dtype=dtype)
                )
        with self._lock:
            self.embedded_inputs += n
        return [e for e in out if e is not None]


# -- loading --------------------------------------------------------------------------------------


def _identity(folder: ColbertFolder) -> str:
    return files_identity(list(folder.files), ("colbert", _settings_of(folder)))


def _settings_of(folder: ColbertFolder) -> dict[str, Any]:
    """The folder's settings without its paths (part of the model's identity)."""
    data = asdict(folder)
    for key in ("path", "transformer_path", "tokenizer_path", "weights_path", "files"):
        data.pop(key)
    data["dense"] = [
        {k: v for k, v in layer.items() if k not in ("weights", "config")}
        for layer in data["dense"]
    ]
    return data


def _graph_identity(folder: ColbertFolder) -> str:
    settings = (
        "colbert-graph-v1",
        folder.layout,
        folder.normalize,
        [(d.in_features, d.out_features, d.bias, d.activation, d.residual) for d in folder.dense],
    )
    return files_identity(folder.graph_files, settings)


def _shipped_runner(folder: ColbertFolder, threads: int | None) -> _OnnxRunner | None:
    """The folder's own ``onnx/model.onnx`` when it ends at the token vectors; None when there is
    none or it ends at the hidden states (a transformer-only export, as optimum writes)."""
    path = folder.transformer_path / "onnx" / "model.onnx"
    if not path.is_file():
        return None
    session = onnx_session(path, threads)
    output = session.get_outputs()[0]
    width = output.shape[-1] if len(output.shape) == 3 else None
    if output.name == OUTPUT_NAME or (width == folder.dim and width != folder.hidden_size):
        # It may end at the projection: normalising again is harmless where it does not.
        return _OnnxRunner(path, threads, folder.dim, folder.normalize, session=session)
    log.info("%s does not end at the ColBERT head (output %s); using an export", path, output.shape)
    return None


def _gate_cosines(
    folder: ColbertFolder, model_id: str, fp32: Any, int8: Any
) -> tuple[float, float, int]:
    """Mean and minimum per-token cosine of int8 to fp32 over the check texts (both sides)."""
    texts = check_texts()
    cosines: list[np.ndarray] = []
    models = [
        ColbertEmbedder(model_id=model_id, folder=folder, runner=r, identity="gate")
        for r in (fp32, int8)
    ]
    for method in ("embed", "embed_queries"):
        a, b = (getattr(m, method)(texts) for m in models)
        for x, y in zip(a, b, strict=True):
            u = np.asarray(x.multivector, dtype=np.float64)
            v = np.asarray(y.multivector, dtype=np.float64)
            den = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
            cosines.append((u * v).sum(axis=1) / np.maximum(den, 1e-12))
    flat = np.concatenate(cosines)
    return float(flat.mean()), float(flat.min()), int(flat.size)


def _ensure_int8(
    folder: ColbertFolder, model_id: str, fp32: Path, directory: Path, threads: int | None
) -> Path:
    """The int8 graph beside ``fp32``, quantised once and kept only if its token vectors stay
    within ``MIN_MEAN_COSINE`` (mean per-token cosine) of the fp32 ones."""
    target = directory / INT8_GRAPH_NAME
    report_path = directory / INT8_GATE_NAME

    def verdict() -> dict[str, Any] | None:
        report = _peek_json(report_path)
        return report if isinstance(report, dict) and "mean_cosine" in report else None

    def refuse(report: dict[str, Any]) -> ModelError:
        return ModelError(
            f"int8 export of {model_id} refused: mean per-token cosine to fp32 "
            f"{report['mean_cosine']:.4f} over {report['tokens']} tokens (need >= "
            f"{MIN_MEAN_COSINE}); use the fp32 model"
        )

    with export_lock(directory):
        report = verdict()
        if report is not None and not report.get("passed"):
            raise refuse(report)
        if report is not None and target.is_file():
            return target
        log.warning("quantising %s to int8 and checking per-token accuracy", fp32)
        candidate = _temp_path(directory, ".int8.onnx")
        try:
            quantize_int8(fp32, candidate)
            mean, low, count = _gate_cosines(
                folder,
                model_id,
                _OnnxRunner(fp32, threads, folder.dim, False),
                _OnnxRunner(candidate, threads, folder.dim, False),
            )
            report = {
                "mean_cosine": mean,
                "min_cosine": low,
                "tokens": count,
                "min_mean": MIN_MEAN_COSINE,
                "passed": mean >= MIN_MEAN_COSINE,
            }
            log.warning("int8 vs fp32: mean per-token cosine %.4f, min %.4f", mean, low)
            tmp_report = _temp_path(directory, ".json")
            tmp_report.write_text(json.dumps(report, indent=2))
            if report["passed"]:
                os.replace(candidate, target)
            os.replace(tmp_report, report_path)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    if not report["passed"]:
        raise refuse(report)
    return target


def load_multivector(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    precision: str = "float32",
    query_length: int | None = None,
    document_length: int | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> ColbertEmbedder:
    """Load a ColBERT folder (sentence-transformers, PyLate or Stanford layout).

    ``backend``: "onnx" (the folder's own head graph, or one exported once into ``cache``),
    "torch", or None (ONNX when a graph exists or torch can export one, else torch).
    ``quantized``: the int8 graph, kept only if its mean per-token cosine to fp32 is >= 0.99.
    ``precision``: float32 or float16 vectors. ``query_length`` / ``document_length`` override
    the folder's (for queries with [MASK] expansion, the expanded length).
    """
    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    folder = read_colbert_folder(Path(path))
    identity = _identity(folder)

    def build(runner: Any) -> ColbertEmbedder:
        return ColbertEmbedder(
            model_id=model_id,
            folder=folder,
            runner=runner,
            identity=identity,
            quantized=quantized,
            precision=precision,
            query_length=query_length,
            document_length=document_length,
            token_budget=token_budget,
        )

    if backend == "torch":
        return build(_TorchRunner(folder, threads))
    directory = export_dir(cache, model_id, _graph_identity(folder))
    shipped = _shipped_runner(folder, threads)
    if shipped is not None and not quantized:
        return build(shipped)
    candidate = shipped.path if shipped is not None else directory / GRAPH_NAME
    graph: Path | None = candidate if candidate.is_file() else None
    if graph is None and torch_available():
        try:
            graph = _export(folder, candidate)
        except ModelError as exc:
            if backend == "onnx" or quantized:
                raise
            # Automatic mode: a failed export must not stop the user; torch still works.
            log.warning("ONNX export failed (%s); using the torch backend", exc)
        except OSError as exc:
            raise ModelError(f"cannot export {model_id} into {directory}: {exc}") from exc
    if graph is None:
        if backend == "onnx" or quantized or not torch_available():
            raise ModelError(
                f"{model_id} has no ColBERT ONNX graph (looked in {folder.path / 'onnx'} and "
                f"{directory}) and torch is not installed to export one: "
                "pip install 'vectorstream[torch]'"
            )
        return build(_TorchRunner(folder, threads))
    if quantized:
        int8 = _ensure_int8(folder, model_id, graph, directory, threads)
        return build(
            _OnnxRunner(int8, threads, folder.dim, shipped is not None and folder.normalize)
        )
    return build(_OnnxRunner(graph, threads, folder.dim, False))


__all__ = [
    "ColbertEmbedder",
    "ColbertFolder",
    "DenseLayer",
    "QueryExpansion",
    "detect_multivector",
    "load_multivector",
    "read_colbert_folder",
]
