"""Reading a ColBERT folder in each of its three layouts, as its reference library reads it.

- sentence-transformers ``MultiVectorEncoder`` (``modules.json``: Transformer, Dense, MultiVectorMask,
  Normalize; lengths and ``query_expansion`` in ``sentence_bert_config.json``; the query/document
  prompts in ``config_sentence_transformers.json`` are prepended as text).
- PyLate (``modules.json``: Transformer and Dense; ``query_prefix``/``document_prefix``,
  ``query_length``, ``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens`` and
  ``skiplist_words`` in ``config_sentence_transformers.json``).
- Stanford ColBERT (``config.json`` naming ``HF_ColBERT``; ``linear.weight`` beside the encoder
  weights; markers, lengths and ``attend_to_mask_tokens`` in ``artifact.metadata``).
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, ModelError
from ._colbert_folder import (
    PYLATE_DOCUMENT_LENGTH,
    PYLATE_DOCUMENT_PREFIX,
    PYLATE_QUERY_LENGTH,
    PYLATE_QUERY_PREFIX,
    STANFORD_DOCUMENT_MARKER,
    STANFORD_QUERY_MARKER,
    ColbertFolder,
    DenseLayer,
    QueryExpansion,
    common_files,
    hidden_size,
    model_limit,
    peek_json,
    positive,
    read_json,
    tokenizer_file,
    weights_file,
)

log = logging.getLogger("vectorstream.models.multivector")

_PYLATE_KEYS = (
    "query_prefix",
    "document_prefix",
    "do_query_expansion",
    "attend_to_expansion_tokens",
    "skiplist_words",
)


def _module_kind(entry: Any) -> str:
    kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
    return kind.rsplit(".", 1)[-1]


def detect_multivector(path: Path) -> bool:
    """Whether the folder's own files say it is a late-interaction (ColBERT) model."""
    try:
        path = Path(path)
        st_config = peek_json(path / "config_sentence_transformers.json")
        if isinstance(st_config, dict):
            if st_config.get("model_type") in ("ColBERT", "MultiVectorEncoder"):
                return True
            if any(key in st_config for key in _PYLATE_KEYS):
                return True
        modules = peek_json(path / "modules.json")
        if isinstance(modules, list):
            for entry in modules:
                kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
                if kind.startswith("pylate.") or kind.endswith(".MultiVectorMask"):
                    return True
        config = peek_json(path / "config.json")
        if isinstance(config, dict) and "HF_ColBERT" in (config.get("architectures") or []):
            return True
    except (OSError, TypeError, AttributeError, ValueError):
        return False
    return False


def _dense_layer(folder: Path, *, pylate: bool) -> DenseLayer:
    config_file = folder / "config.json"
    config = read_json(config_file)
    weights = weights_file(folder)
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


def _expansion(raw: Any, source: Path) -> QueryExpansion | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("strategy") not in ("fixed", "min"):
        raise ModelError(f"{source}: unsupported query_expansion {raw!r}")
    length = positive(raw.get("length"), "query_expansion length", source)
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
    config = peek_json(path / "config.json")
    if isinstance(config, dict) and "HF_ColBERT" in (config.get("architectures") or []):
        return _read_stanford_folder(path)
    raise ModelError(
        f"{path} is not a ColBERT folder: no modules.json (sentence-transformers / PyLate) and "
        "config.json does not name HF_ColBERT (Stanford ColBERT)"
    )


def _read_modules_folder(path: Path) -> ColbertFolder:
    modules = read_json(path / "modules.json")
    if not isinstance(modules, list):
        raise ModelError(f"{path / 'modules.json'} is not a list of modules")
    st_file = path / "config_sentence_transformers.json"
    st = read_json(st_file) if st_file.is_file() else {}
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
            mask_config = read_json(sub / "config.json") if (sub / "config.json").is_file() else {}
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
    tokenizer_path = tokenizer_file(transformer_path)
    hidden = hidden_size(transformer_path)
    bert_file = transformer_path / "sentence_bert_config.json"
    bert = read_json(bert_file) if bert_file.is_file() else {}
    files += [*common_files(transformer_path), bert_file]
    weights = weights_file(transformer_path)
    common: dict[str, Any] = {
        "path": path,
        "transformer_path": transformer_path,
        "tokenizer_path": tokenizer_path,
        "hidden_size": hidden,
        "dense": tuple(dense),
        "model_max_tokens": model_limit(transformer_path, None if pylate else bert),
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

    query_length = positive(setting("query_length", PYLATE_QUERY_LENGTH), "query_length", source)
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
        document_length=positive(
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
        query_length=positive(bert.get("query_length"), "query_length", bert_file),
        document_length=positive(bert.get("document_length"), "document_length", bert_file),
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
    tokenizer_path = tokenizer_file(path)
    weights = weights_file(path)
    if weights is None:
        raise ModelError(
            f"Stanford ColBERT folder {path} has no model.safetensors/pytorch_model.bin"
        )
    hidden = hidden_size(path)
    metadata_file = path / "artifact.metadata"
    metadata = read_json(metadata_file) if metadata_file.is_file() else {}
    if not metadata:
        log.warning("%s has no artifact.metadata: using Stanford ColBERT's defaults", path)
    out_features = _linear_rows(weights)
    query_length = positive(
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
        document_length=positive(
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
        model_max_tokens=model_limit(path, None),
        do_lower_case=False,
        weights_path=weights,
        files=(*common_files(path), metadata_file, weights),
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


__all__ = ["detect_multivector", "read_colbert_folder"]
