"""Read a model folder in the sentence-transformers layout (or a plain HuggingFace folder).

sentence-transformers describes its pipeline in ``modules.json``: a Transformer module (whose folder
holds ``config.json``, ``tokenizer.json`` and ``sentence_bert_config.json``), a Pooling module
(``1_Pooling/config.json``) and optionally a Normalize module. We reproduce that pipeline exactly,
so the vectors match sentence-transformers' own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

# sentence-transformers concatenates enabled pooling modes in this order.
POOLING_ORDER: tuple[str, ...] = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_PREFIX = "sentence_transformers.models."
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """What a model folder says about how to turn token states into one vector per text."""

    path: Path  # the folder the spec resolved to
    transformer_path: Path  # where config.json / tokenizer.json live (usually == path)
    tokenizer_path: Path
    pooling: tuple[str, ...]  # modes concatenated in this order
    hidden_size: int
    normalize: bool  # the folder ends with a Normalize module
    max_tokens: int  # including special tokens
    do_lower_case: bool
    onnx_path: Path | None  # a graph shipped with the folder (onnx/model.onnx)
    int8_path: Path | None  # a gated int8 graph shipped with it (onnx/model.int8.onnx)
    weights_path: Path | None

    @property
    def dim(self) -> int:
        return self.hidden_size * len(self.pooling)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


_MODE_NAMES = {
    "cls": "cls",
    "cls_token": "cls",
    "max": "max",
    "max_tokens": "max",
    "mean": "mean",
    "mean_tokens": "mean",
    "mean_sqrt_len": "mean_sqrt_len",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "lasttoken": "lasttoken",
}


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    # sentence-transformers >= 6 writes "pooling_mode" (a name or a list, concatenated in the
    # order given); older versions write one boolean per mode, concatenated in a fixed order.
    listed = config.get("pooling_mode")
    if listed is not None:
        names = [listed] if isinstance(listed, str) else list(listed)
        unknown = [n for n in names if n not in _MODE_NAMES]
        if unknown:
            raise ModelError(f"unsupported pooling mode(s) {unknown}")
        modes = tuple(_MODE_NAMES[n] for n in names)
    else:
        if config.get("pooling_mode_weightedmean_tokens"):
            raise ModelError("unsupported pooling mode(s) ['weightedmean']")
        enabled = {name for key, name in _POOLING_KEYS.items() if config.get(key)}
        modes = tuple(m for m in POOLING_ORDER if m in enabled)
    if not modes:
        raise ModelError("the pooling config enables no pooling mode")
    return modes


def read_folder(path: Path) -> ModelFolder:
    """Parse the folder's configuration; raise ModelError naming any missing or unsupported part."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    transformer_path = path
    pooling: tuple[str, ...] = ("mean",)  # sentence-transformers' default for a plain HF model
    normalize = False
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        pooling_cfg: dict[str, Any] | None = None
        for module in modules:
            kind = str(module.get("type", "")).removeprefix(_ST_PREFIX)
            sub = path / str(module.get("path", ""))
            if kind == "Transformer":
                transformer_path = sub
            elif kind == "Pooling":
                pooling_cfg = _read_json(sub / "config.json")
            elif kind == "Normalize":
                normalize = True
            else:
                raise ModelError(
                    f"{modules_file}: module type {module.get('type')!r} is not supported "
                    "(supported: Transformer, Pooling, Normalize)"
                )
        if pooling_cfg is not None:
            pooling = _pooling_modes(pooling_cfg)
    config_file = transformer_path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {path} has no config.json (looked for {config_file})")
    config = _read_json(config_file)
    tokenizer_path = transformer_path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"model folder {path} has no tokenizer.json (looked for {tokenizer_path}); "
            "only fast-tokenizer folders are supported"
        )
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not isinstance(hidden, int):
        raise ModelError(f"{config_file} does not give hidden_size")

    st_config_file = transformer_path / "sentence_bert_config.json"
    st_config = _read_json(st_config_file) if st_config_file.is_file() else {}
    max_tokens = st_config.get("max_seq_length")
    if not isinstance(max_tokens, int):
        # sentence-transformers' rule for a folder without its config: the smaller of the
        # tokenizer's and the position table's limits.
        limits = [config.get("max_position_embeddings")]
        tok_config_file = transformer_path / "tokenizer_config.json"
        if tok_config_file.is_file():
            limits.append(_read_json(tok_config_file).get("model_max_length"))
        ints = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        max_tokens = min(ints) if ints else 512

    onnx_path = transformer_path / "onnx" / "model.onnx"
    int8_path = transformer_path / "onnx" / "model.int8.onnx"
    weights = next(
        (transformer_path / n for n in _WEIGHT_FILES if (transformer_path / n).is_file()), None
    )
    return ModelFolder(
        path=path,
        transformer_path=transformer_path,
        tokenizer_path=tokenizer_path,
        pooling=pooling,
        hidden_size=hidden,
        normalize=normalize,
        max_tokens=max_tokens,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        onnx_path=onnx_path if onnx_path.is_file() else None,
        int8_path=int8_path if int8_path.is_file() else None,
        weights_path=weights,
    )


_digest_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so reloading a model does not rehash."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    with _digest_lock:
        _digests[key] = digest
    return digest


def weights_identity(folder: ModelFolder) -> str:
    """A digest of everything that decides the vectors: weights, tokenizer and module configs."""
    parts: list[Path] = []
    if folder.weights_path is not None:
        parts.append(folder.weights_path)
    elif folder.onnx_path is not None:
        parts.append(folder.onnx_path)
    parts += [
        folder.transformer_path / "config.json",
        folder.tokenizer_path,
        folder.path / "modules.json",
        folder.transformer_path / "sentence_bert_config.json",
    ]
    h = hashlib.sha256()
    for part in parts:
        if part.is_file():
            h.update(part.name.encode())
            h.update(file_digest(part).encode())
    h.update(repr((folder.pooling, folder.normalize, folder.max_tokens)).encode())
    return h.hexdigest()


def files_identity(files: list[Path], settings: object = None) -> str:
    """A digest of the files that decide a model's outputs (missing ones are skipped) and of
    ``settings`` (its repr): the identity under which exports of any model kind are cached."""
    h = hashlib.sha256()
    for part in files:
        if part.is_file():
            h.update(part.name.encode())
            h.update(file_digest(part).encode())
    h.update(repr(settings).encode())
    return h.hexdigest()


__all__ = [
    "POOLING_ORDER",
    "ModelFolder",
    "file_digest",
    "files_identity",
    "read_folder",
    "weights_identity",
]
