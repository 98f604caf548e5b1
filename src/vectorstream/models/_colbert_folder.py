"""What a ColBERT folder says: the settings every layout is read into, and the file readers the
layouts share (see :mod:`._colbert_layouts` for the layouts themselves).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

# PyLate's and Stanford ColBERT's defaults when a folder leaves a setting out.
PYLATE_QUERY_LENGTH = 32
PYLATE_DOCUMENT_LENGTH = 180
PYLATE_QUERY_PREFIX = "[Q] "
PYLATE_DOCUMENT_PREFIX = "[D] "
STANFORD_QUERY_MARKER = "[unused0]"
STANFORD_DOCUMENT_MARKER = "[unused1]"

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def peek_json(path: Path) -> Any:
    """A small JSON file, or None when it is missing or unreadable (for detection)."""
    with contextlib.suppress(OSError, ValueError):
        if path.is_file() and path.stat().st_size < 4_000_000:
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def weights_file(folder: Path) -> Path | None:
    return next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)


def model_limit(transformer_path: Path, st_config: dict[str, Any] | None) -> int:
    """sentence-transformers' limit: max_seq_length, else the tokenizer's and positions' smaller."""
    if st_config is not None and isinstance(st_config.get("max_seq_length"), int):
        return int(st_config["max_seq_length"])
    config = peek_json(transformer_path / "config.json") or {}
    tok_config = peek_json(transformer_path / "tokenizer_config.json") or {}
    limits = [config.get("max_position_embeddings"), tok_config.get("model_max_length")]
    ints = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(ints) if ints else 512


def hidden_size(transformer_path: Path) -> int:
    config = read_json(transformer_path / "config.json")
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not isinstance(hidden, int):
        raise ModelError(f"{transformer_path / 'config.json'} does not give hidden_size")
    return hidden


def positive(value: Any, name: str, source: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{source}: {name} must be a positive integer, got {value!r}")
    return value


def tokenizer_file(transformer_path: Path) -> Path:
    tokenizer_path = transformer_path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"{transformer_path} has no tokenizer.json; only fast-tokenizer folders are supported"
        )
    return tokenizer_path


def common_files(transformer_path: Path) -> list[Path]:
    names = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    return [transformer_path / n for n in names]


__all__ = [
    "ColbertFolder",
    "DenseLayer",
    "QueryExpansion",
    "common_files",
    "hidden_size",
    "model_limit",
    "peek_json",
    "positive",
    "read_json",
    "tokenizer_file",
    "weights_file",
]
