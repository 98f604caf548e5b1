"""What a SPLADE folder says, read the sentence-transformers ``SparseEncoder`` way.

``modules.json`` with an ``MLMTransformer`` (or a ``Transformer`` whose task is ``fill-mask``) and a
``SpladePooling`` module, whose config names the pooling (max or sum) and the activation (relu, or
log1p_relu: one more log1p); both module-type spellings (``sparse_encoder.modules.…`` and the older
``sparse_encoder.models.…``) are read. A plain HuggingFace ``*ForMaskedLM`` folder is not detected
as sparse (it may as well be a plain language model) but reads when the caller names the kind, with
max pooling and relu, as sentence-transformers builds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

POOLINGS: tuple[str, ...] = ("max", "sum")
ACTIVATIONS: tuple[str, ...] = ("relu", "log1p_relu")

_TRANSFORMERS = ("MLMTransformer", "Transformer")
_ASYMMETRIC = ("Router", "Asym")
_MISSING_LIMIT = 1_000_000  # tokenizer_config's "no limit" is a huge number


def _short_type(module: dict[str, Any]) -> str:
    # "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling" and the older
    # "sentence_transformers.sparse_encoder.models.SpladePooling" both end with the class name.
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = _json(path)
    return data if isinstance(data, dict) else {}


def detect_sparse(path: Path) -> bool:
    """Whether the folder's own files say it is a SPLADE model: a ``SpladePooling`` module, or a
    sentence-transformers config whose model type is ``SparseEncoder``. Never raises."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        if isinstance(modules, list) and any(
            isinstance(m, dict) and _short_type(m) == "SpladePooling" for m in modules
        ):
            return True
        st_config = json.loads(
            (path / "config_sentence_transformers.json").read_text(encoding="utf-8")
        )
        return isinstance(st_config, dict) and st_config.get("model_type") == "SparseEncoder"
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class SparseFolder:
    """What a SPLADE folder says: where its parts are and how to pool, truncate and prompt."""

    path: Path
    transformer_path: Path  # config.json, weights, tokenizer.json
    tokenizer_path: Path
    vocab_size: int
    pooling: str  # "max" | "sum"
    activation: str  # "relu" | "log1p_relu"
    max_tokens: int  # document side, special tokens included
    query_max_tokens: int
    do_lower_case: bool
    query_prompt: str
    document_prompt: str
    max_active_dims: int | None  # the folder's own top-k, when it sets one
    onnx_path: Path | None  # a logits graph shipped in the folder (onnx/model.onnx)
    weights_path: Path | None
    identity_files: tuple[Path, ...]  # everything that decides the weights


def _modules(path: Path) -> tuple[Path, str, Path]:
    """The transformer folder, its module class and the SpladePooling config file."""
    modules_file = path / "modules.json"
    modules = _json(modules_file)
    if not isinstance(modules, list):
        raise ModelError(f"{modules_file} is not a list of modules")
    transformer: Path | None = None
    transformer_kind = ""
    pooling: Path | None = None
    for module in modules:
        kind = _short_type(module)
        sub = path / str(module.get("path", ""))
        if kind in _ASYMMETRIC:
            raise ModelError(
                f"{modules_file}: a {kind} module (separate query and document encoders, such as an "
                "inference-free SparseStaticEmbedding query side) is not supported; only symmetric "
                "SPLADE (one masked-LM encoder for both sides) is"
            )
        if kind in _TRANSFORMERS and transformer is None and pooling is None:
            transformer, transformer_kind = sub, kind
        elif kind == "SpladePooling" and transformer is not None and pooling is None:
            pooling = sub / "config.json"
        else:
            raise ModelError(
                f"{modules_file}: module {module.get('type')!r} is not supported here; a SPLADE "
                "folder holds an MLMTransformer (or fill-mask Transformer) then SpladePooling"
            )
    if transformer is None or pooling is None:
        raise ModelError(
            f"{modules_file} lacks a {'masked-LM transformer' if transformer is None else 'SpladePooling'}"
            " module; a SPLADE folder holds an MLMTransformer (or fill-mask Transformer) then "
            "SpladePooling"
        )
    return transformer, transformer_kind, pooling


def _limits(
    transformer: Path, config: dict[str, Any], st_config: dict[str, Any]
) -> tuple[int, int]:
    """Document and query token limits, by sentence-transformers' rules."""
    processor = st_config.get("processor_kwargs") or st_config.get("tokenizer_args") or {}
    if isinstance(processor.get("model_max_length"), int):
        limit = int(processor["model_max_length"])  # given explicitly: not capped
    elif isinstance(st_config.get("max_seq_length"), int):
        limit = int(st_config["max_seq_length"])  # older folders: not capped either
    else:
        # The tokenizer's model_max_length, capped at the position table.
        tok_limit = json_or_empty(transformer / "tokenizer_config.json").get("model_max_length")
        positions = config.get("max_position_embeddings")
        limits = [
            v for v in (tok_limit, positions) if isinstance(v, int) and 0 < v < _MISSING_LIMIT
        ]
        limit = min(limits) if limits else 512
    document = st_config.get("document_length") or limit
    query = st_config.get("query_length") or limit
    # Per-module processing_kwargs win over the per-side lengths (text over common).
    processing = st_config.get("processing_kwargs") or {}
    for bucket in ("common", "text"):
        given = (processing.get(bucket) or {}).get("max_length")
        if isinstance(given, int):
            document = query = given
    return int(document), int(query)


def _prompts(st_config: dict[str, Any]) -> tuple[str, str]:
    """The query and document prompts sentence-transformers' encode_query/encode_document use."""
    prompts = st_config.get("prompts") or {}
    default_name = st_config.get("default_prompt_name")
    default = prompts.get(default_name) if default_name else None

    def pick(names: tuple[str, ...]) -> str:
        for name in names:
            if name in prompts:
                return str(prompts[name] or "")
        return str(default or "")

    return pick(("query",)), pick(("document", "passage", "corpus"))


def read_sparse_folder(path: Path) -> SparseFolder:
    """Parse a SPLADE folder; a ``ModelError`` names any missing or unsupported part."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    pooling_file: Path | None = None
    transformer = path
    # A plain masked-LM folder runs as fill-mask (sentence-transformers builds it so); so does an
    # MLMTransformer module; a Transformer module says its task, feature extraction if it does not.
    default_task = "fill-mask"
    if (path / "modules.json").is_file():
        transformer, kind, pooling_file = _modules(path)
        default_task = "feature-extraction" if kind == "Transformer" else "fill-mask"
    pooling_cfg = json_or_empty(pooling_file) if pooling_file is not None else {}
    config_file = transformer / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {path} has no config.json (looked for {config_file})")
    config = json_or_empty(config_file)
    st_config = json_or_empty(transformer / "sentence_bert_config.json")
    task = st_config.get("transformer_task", default_task)
    if task != "fill-mask":
        raise ModelError(
            f"{transformer / 'sentence_bert_config.json'}: transformer_task is {task!r}; SPLADE needs "
            "the masked-LM head (transformer_task 'fill-mask')"
        )
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith("ForMaskedLM") for a in architectures):
        raise ModelError(
            f"{path} has no masked-LM head: {config_file} names {architectures}, SPLADE needs a "
            "*ForMaskedLM model (the MLM head turns token states into vocabulary logits)"
        )
    if st_config.get("query_expansion"):
        raise ModelError(f"{path}: query_expansion (ColBERT-style) is not supported for SPLADE")
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        raise ModelError(f"{config_file} does not give vocab_size")
    tokenizer_path = transformer / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"model folder {path} has no tokenizer.json (looked for {tokenizer_path}); "
            "only fast-tokenizer folders are supported"
        )

    pooling = str(pooling_cfg.get("pooling_strategy", "max"))
    activation = str(pooling_cfg.get("activation_function", "relu"))
    if pooling not in POOLINGS:
        raise ModelError(f"{path}: SpladePooling strategy {pooling!r} is not one of {POOLINGS}")
    if activation not in ACTIVATIONS:
        raise ModelError(
            f"{path}: SpladePooling activation {activation!r} is not one of {ACTIVATIONS}"
        )
    document, query = _limits(transformer, config, st_config)
    model_config = json_or_empty(path / "config_sentence_transformers.json")
    query_prompt, document_prompt = _prompts(model_config)
    active = model_config.get("max_active_dims")

    weights = next(
        (
            transformer / n
            for n in ("model.safetensors", "pytorch_model.bin")
            if (transformer / n).is_file()
        ),
        None,
    )
    onnx_path = transformer / "onnx" / "model.onnx"
    identity_files = (
        *([weights] if weights is not None else []),
        onnx_path,
        config_file,
        tokenizer_path,
        transformer / "tokenizer_config.json",
        transformer / "sentence_bert_config.json",
        path / "modules.json",
        path / "config_sentence_transformers.json",
        *([pooling_file] if pooling_file is not None else []),
    )
    return SparseFolder(
        path=path,
        transformer_path=transformer,
        tokenizer_path=tokenizer_path,
        vocab_size=vocab,
        pooling=pooling,
        activation=activation,
        max_tokens=document,
        query_max_tokens=query,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        max_active_dims=active if isinstance(active, int) and active > 0 else None,
        onnx_path=onnx_path if onnx_path.is_file() else None,
        weights_path=weights,
        identity_files=identity_files,
    )


__all__ = [
    "ACTIVATIONS",
    "POOLINGS",
    "SparseFolder",
    "detect_sparse",
    "json_or_empty",
    "read_sparse_folder",
]
