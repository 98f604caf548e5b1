"""Settings with one precedence: argument > ``VECTORSTREAM_*`` environment > ``vectorstream.toml`` > default.

Environment variables (the only place they are read):

| variable | setting | default |
|---|---|---|
| ``VECTORSTREAM_MODEL`` | model spec | ``sentence-transformers/all-MiniLM-L6-v2`` |
| ``VECTORSTREAM_STORE`` | store URI | ``lancedb://./.vectorstream`` |
| ``VECTORSTREAM_COLLECTION`` | collection (table) name | ``documents`` |
| ``VECTORSTREAM_BACKEND`` | ``onnx`` or ``torch`` (empty: automatic) | automatic |
| ``VECTORSTREAM_CACHE_DIR`` | exported ONNX graphs and other caches | ``~/.cache/vectorstream`` |
| ``VECTORSTREAM_THREADS`` | inference threads (0: the cores this process may use) | ``0`` |
| ``VECTORSTREAM_ENGINE`` | ``local`` or ``ray`` (where ``ingest`` runs) | ``local`` |
| ``VECTORSTREAM_RAY_ADDRESS`` | the Ray cluster to join (Ray's own ``RAY_ADDRESS`` works too) | none |
| ``VECTORSTREAM_CONFIG`` | path of the TOML file | ``./vectorstream.toml`` |
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_STORE = "lancedb://./.vectorstream"
DEFAULT_COLLECTION = "documents"


@dataclass(frozen=True, slots=True)
class Settings:
    model: str = DEFAULT_MODEL
    store: str = DEFAULT_STORE
    collection: str = DEFAULT_COLLECTION
    backend: str | None = None
    cache_dir: str = "~/.cache/vectorstream"
    threads: int = 0
    engine: str = "local"
    ray_address: str | None = None

    @property
    def cache_path(self) -> Path:
        return Path(os.path.expanduser(self.cache_dir))


_ENV = {
    "model": "VECTORSTREAM_MODEL",
    "store": "VECTORSTREAM_STORE",
    "collection": "VECTORSTREAM_COLLECTION",
    "backend": "VECTORSTREAM_BACKEND",
    "cache_dir": "VECTORSTREAM_CACHE_DIR",
    "threads": "VECTORSTREAM_THREADS",
    "engine": "VECTORSTREAM_ENGINE",
    "ray_address": "VECTORSTREAM_RAY_ADDRESS",
}


def _coerce(name: str, value: Any) -> Any:
    if name == "threads":
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {name!r} must be an integer, got {value!r}") from exc
    if name == "backend":
        value = (str(value).strip().lower() or None) if value is not None else None
        if value not in (None, "onnx", "torch"):
            raise ConfigError(f"backend must be 'onnx' or 'torch', got {value!r}")
        return value
    if name == "engine":
        value = str(value).strip().lower() or "local"
        if value not in ("local", "ray"):
            raise ConfigError(f"engine must be 'local' or 'ray', got {value!r}")
        return value
    if name == "ray_address":
        return str(value).strip() or None
    return str(value)


def _read_toml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    section = data.get("vectorstream", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [vectorstream] must be a table")
    return section


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings; keyword arguments that are not ``None`` win over everything else."""
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    toml_path = Path(os.environ.get("VECTORSTREAM_CONFIG", "vectorstream.toml"))
    for key, value in _read_toml(toml_path).items():
        if key not in known:
            raise ConfigError(f"{toml_path}: unknown setting {key!r}; known: {sorted(known)}")
        values[key] = _coerce(key, value)
    for key, var in _ENV.items():
        if var in os.environ:
            values[key] = _coerce(key, os.environ[var])
    for key, value in overrides.items():
        if value is not None:
            values[key] = _coerce(key, value)
    return replace(Settings(), **values)


__all__ = ["DEFAULT_COLLECTION", "DEFAULT_MODEL", "DEFAULT_STORE", "Settings", "load_settings"]
