"""What a cross-encoder folder says: architecture, labels, max length, prompt and activation.

Read as sentence-transformers' ``CrossEncoder`` reads it:

- the max length is ``sentence_bert_config.json``'s ``max_seq_length`` when given, otherwise the
  tokenizer's ``model_max_length`` capped by the config's ``max_position_embeddings``;
- the activation is the one recorded in ``config_sentence_transformers.json`` (``activation_fn``),
  else in ``config.json`` (``sentence_transformers.activation_fn``, or the pre-v4
  ``sbert_ce_default_activation_function``), else **sigmoid for a single-label model and identity
  for a multi-label one**. Paths outside ``torch.`` are not imported (sentence-transformers ignores
  them too without ``trust_remote_code``) and the default applies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

log = logging.getLogger("vectorstream.models.rerank")

_ST_PREFIX = "sentence_transformers."
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Activation classes a folder may record (dotted paths as sentence-transformers writes them).
_FOLDER_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.Softmax": "softmax",
}


@dataclass(frozen=True, slots=True)
class RerankFolder:
    """What a cross-encoder folder says about turning a pair into scores."""

    path: Path
    transformer_path: Path  # config.json, tokenizer.json and weights live here
    tokenizer_path: Path
    architecture: str
    num_labels: int
    max_tokens: int  # pair length, special tokens included
    do_lower_case: bool
    activation: str  # what the folder's configs (or the default) choose
    prompt: str  # the default prompt put before every query ("" for none)
    onnx_path: Path | None  # a logits graph shipped with the folder
    weights_path: Path | None
    identity_files: tuple[Path, ...]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _transformer_dir(path: Path, modules: Any) -> Path:
    """The Transformer module's folder; ModelError for any other module (a head we cannot run)."""
    if modules is None:
        return path
    if not isinstance(modules, list):
        raise ModelError(f"{path / 'modules.json'} is not a list of modules")
    found: Path | None = None
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.rsplit(".", 1)[-1] == "Transformer" and kind.startswith(_ST_PREFIX):
            found = path / str(module.get("path", ""))
        else:
            raise ModelError(
                f"{path / 'modules.json'}: module {kind or module!r} is not supported by the "
                "reranker (supported: one Transformer module with a sequence-classification head)"
            )
    if found is None:
        raise ModelError(f"{path / 'modules.json'} lists no Transformer module")
    return found


def _is_seq_classification(config: Any) -> bool:
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(
        str(a).endswith("ForSequenceClassification") for a in architectures
    )


def detect_rerank(path: Path) -> bool:
    """Whether the folder's own files say it is a cross-encoder (never raises).

    A sentence-transformers CrossEncoder folder says so in ``config_sentence_transformers.json``
    (v4+), in ``sentence_bert_config.json`` (``transformer_task: sequence-classification``) or, for
    older ones, in ``config.json`` (its recorded activation). A plain HF sequence-classification
    folder says nothing of the kind: load it with ``kind="rerank"``.
    """
    try:
        if not path.is_dir():
            return False
        st_config = json_or_none(path / "config_sentence_transformers.json")
        if isinstance(st_config, dict) and st_config.get("model_type") == "CrossEncoder":
            return True
        try:
            transformer = _transformer_dir(path, json_or_none(path / "modules.json"))
        except ModelError:
            return False
        config = json_or_none(transformer / "config.json")
        if not _is_seq_classification(config):
            return False
        sbert = json_or_none(transformer / "sentence_bert_config.json")
        if isinstance(sbert, dict) and sbert.get("transformer_task") == "sequence-classification":
            return True
        return "sbert_ce_default_activation_function" in config or isinstance(
            config.get("sentence_transformers"), dict
        )
    except Exception:  # detection runs on every load_model call: an odd folder is "not mine"
        return False


def _folder_activation(recorded: Any, where: str) -> str | None:
    """The activation a recorded dotted path names; None where sentence-transformers ignores it."""
    if not isinstance(recorded, str) or not recorded:
        return None
    if not recorded.startswith("torch."):
        log.warning(
            "%s names the activation %r; like sentence-transformers without trust_remote_code, "
            "it is not imported and the default applies",
            where,
            recorded,
        )
        return None
    name = _FOLDER_ACTIVATIONS.get(recorded)
    if name is None:
        raise ModelError(
            f"{where} names the activation {recorded!r}, which the reranker cannot apply "
            f"(supported: {sorted(set(_FOLDER_ACTIVATIONS))})"
        )
    return name


def _choose_activation(st_config: Any, config: dict[str, Any], num_labels: int, where: Path) -> str:
    # sentence-transformers' order: its own config file, then config.json (v4 key, else the
    # pre-v4 key), then the default by label count.
    if isinstance(st_config, dict) and "activation_fn" in st_config:
        chosen = _folder_activation(
            st_config["activation_fn"], str(where / "config_sentence_transformers.json")
        )
        if chosen is not None:
            return chosen
    st_section = config.get("sentence_transformers")
    recorded: Any = None
    if isinstance(st_section, dict) and "activation_fn" in st_section:
        recorded = st_section["activation_fn"]
    elif config.get("sbert_ce_default_activation_function") is not None:
        recorded = config["sbert_ce_default_activation_function"]
    chosen = _folder_activation(recorded, str(where / "config.json"))
    if chosen is not None:
        return chosen
    return "sigmoid" if num_labels == 1 else "identity"


def _max_tokens(sbert: Any, config: dict[str, Any], tok_config: Any) -> int:
    if isinstance(sbert, dict) and isinstance(sbert.get("max_seq_length"), int):
        return int(sbert["max_seq_length"])
    limits: list[int] = []
    model_max = tok_config.get("model_max_length") if isinstance(tok_config, dict) else None
    if isinstance(model_max, int | float) and 0 < model_max < 1_000_000:
        limits.append(int(model_max))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:  # xlnet writes -1 for "no limit"
        limits.append(positions)
    return min(limits) if limits else 512


def _prompt(st_config: Any) -> str:
    if not isinstance(st_config, dict):
        return ""
    name = st_config.get("default_prompt_name")
    prompts = st_config.get("prompts")
    if not name:
        return ""
    if not isinstance(prompts, dict) or name not in prompts:
        raise ModelError(f"the default prompt {name!r} is not among the folder's prompts")
    return str(prompts[name])


def read_rerank_folder(path: Path) -> RerankFolder:
    """Parse a cross-encoder folder; ModelError naming whatever is missing or unsupported."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    modules_file = path / "modules.json"
    transformer = _transformer_dir(path, _json(modules_file) if modules_file.is_file() else None)
    config_file = transformer / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {path} has no config.json (looked for {config_file})")
    config = _json(config_file)
    if not isinstance(config, dict) or not _is_seq_classification(config):
        architectures = config.get("architectures") if isinstance(config, dict) else None
        raise ModelError(
            f"{config_file} names {architectures!r}; a reranker needs a "
            "*ForSequenceClassification model (a cross-encoder)"
        )
    tokenizer_path = transformer / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"model folder {path} has no tokenizer.json (looked for {tokenizer_path}); "
            "only fast-tokenizer folders are supported"
        )
    labels = config.get("num_labels")
    if not isinstance(labels, int):
        id2label = config.get("id2label")
        labels = len(id2label) if isinstance(id2label, dict) and id2label else 2
    sbert = json_or_none(transformer / "sentence_bert_config.json")
    st_config_file = path / "config_sentence_transformers.json"
    st_config = _json(st_config_file) if st_config_file.is_file() else None
    onnx_path = transformer / "onnx" / "model.onnx"
    weights = next((transformer / n for n in _WEIGHT_FILES if (transformer / n).is_file()), None)
    decisive = (weights or onnx_path, config_file, tokenizer_path)
    configs = (
        transformer / "tokenizer_config.json",
        transformer / "sentence_bert_config.json",
        modules_file,
        st_config_file,
    )
    return RerankFolder(
        path=path,
        transformer_path=transformer,
        tokenizer_path=tokenizer_path,
        architecture=str(config["architectures"][0]),
        num_labels=labels,
        max_tokens=_max_tokens(sbert, config, json_or_none(transformer / "tokenizer_config.json")),
        do_lower_case=bool(isinstance(sbert, dict) and sbert.get("do_lower_case")),
        activation=_choose_activation(st_config, config, labels, path),
        prompt=_prompt(st_config),
        onnx_path=onnx_path if onnx_path.is_file() else None,
        weights_path=weights,
        identity_files=(*decisive, *configs),
    )


__all__ = ["RerankFolder", "detect_rerank", "json_or_none", "read_rerank_folder"]
