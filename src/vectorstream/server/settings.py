"""Settings of the HTTP service, as one frozen value object.

The model, store and collection come from :mod:`vectorstream.config` (argument > environment >
``vectorstream.toml`` > default). The service's own knobs are read here, and only here, from
``VECTORSTREAM_SERVER_*`` variables (listed in ``docs/server.md``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ..config import load_settings
from ..errors import ConfigError

# The model kinds the service embeds with (a reranker is served beside one, with --rerank-model).
SERVED_KINDS: tuple[str, ...] = ("dense", "sparse", "multivector", "image")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything :func:`vectorstream.server.create_app` needs to know.

    ``max_tokens_per_input`` of 0 means "the model's own limit". ``api_key`` of ``None`` turns
    authentication off. ``cors_origins`` empty means no CORS headers at all (the default).
    """

    model: str | None = None
    # The model's kind (dense, sparse, multivector, image); None: what the model folder says.
    kind: str | None = None
    store: str | None = None
    collection: str | None = None
    backend: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    max_inputs: int = 2048
    max_tokens_per_input: int = 0
    truncate: bool = False
    max_documents: int = 64
    max_document_chars: int = 1_000_000
    # Micro-batching: wait at most this long for company, or until the batch holds this many tokens.
    batch_wait_ms: float = 4.0
    batch_max_tokens: int = 16384
    queue_max_inputs: int = 4096
    # Batches in the model at once, each with cores/lanes inference threads; 0: automatic (two on
    # a CPU with two cores or more, one for the torch backend).
    lanes: int = 0
    # With several lanes, a request that finds the model idle runs on a second session using every
    # core (lower latency), when the graph is at most this large (it holds its own weights).
    solo_max_bytes: int = 512 * 1024 * 1024
    retry_after_s: int = 1
    highlight_cache_bytes: int = 64 * 1024 * 1024
    max_jobs: int = 100
    # A cross-encoder for POST /v1/rerank (a folder, hub id or alias); None: no reranker.
    rerank_model: str | None = None
    max_rerank_documents: int = 1000  # documents per /v1/rerank request
    # An image input (image models) may hold at most this many pixels once decoded; it also bounds
    # the pixels decoded at once for one request (images are embedded in groups within it).
    max_image_pixels: int = 1 << 25
    # An LLM served at /v1/chat/completions and /v1/completions (docs/llm.md): an HF folder, a
    # GGUF file or a packaged model ("smollm2"); None: no LLM.
    llm: str | None = None
    # Where its contexts live (default: <cache>/llm-contexts/<model>), and their disk budget
    # (least recently used evicted first; 0: no limit).
    llm_contexts: str | None = None
    llm_context_budget: int = 8 * 1024**3
    llm_queue: int = 8  # generations waiting for the model; more answer 503
    # A prompt with at least this many tokens computed anew is stored after its answer (0: never).
    llm_store_min_tokens: int = 1024
    llm_alpha: float | None = None  # the default DIPR α (None: the library's default, 1e-3)
    # Serve the LLM at this many times its trained length, positions stretched by YaRN (None: no).
    llm_yarn: float | None = None
    llm_profiles: tuple[str, ...] = ()  # NAME=FILE attention profiles (JSON of SparseConfig fields)
    # "float16": a float32 model's contexts are stored at half the size, and long ones decode
    # faster (fewer pages per step); None: the model's own dtype, reuse bit for bit.
    llm_kv_dtype: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_inputs",
            "batch_max_tokens",
            "queue_max_inputs",
            "max_documents",
            "max_document_chars",
            "max_rerank_documents",
            "max_jobs",
            "max_image_pixels",
            "llm_queue",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server setting {name} must be > 0, got {getattr(self, name)}")
        if (
            self.batch_wait_ms < 0
            or self.highlight_cache_bytes < 0
            or self.max_tokens_per_input < 0
            or self.lanes < 0
            or self.solo_max_bytes < 0
            or self.llm_context_budget < 0
            or self.llm_store_min_tokens < 0
        ):
            raise ConfigError(
                "batch_wait_ms, highlight_cache_bytes, max_tokens_per_input, lanes and solo_max_bytes must be >= 0 (as must llm_context_budget and llm_store_min_tokens)"
            )
        if self.llm_kv_dtype not in (None, "float16"):
            raise ConfigError(f"llm_kv_dtype must be 'float16' or unset, got {self.llm_kv_dtype!r}")
        if self.llm_yarn is not None and not self.llm_yarn > 1:
            raise ConfigError(f"llm_yarn must be a factor above 1, got {self.llm_yarn}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.kind is not None:
            kind = self.kind.strip().lower()
            if kind not in SERVED_KINDS:
                hint = "; serve a reranker with rerank_model" if kind == "rerank" else ""
                raise ConfigError(
                    f"unknown model kind {self.kind!r} for the service; choose one of: "
                    f"{', '.join(SERVED_KINDS)}{hint}"
                )
            object.__setattr__(self, "kind", kind)

    def resolved(self) -> ServerSettings:
        """Fill ``model``/``store``/``collection``/``backend`` from the library's settings."""
        base = load_settings(
            model=self.model, store=self.store, collection=self.collection, backend=self.backend
        )
        return replace(
            self,
            model=base.model,
            store=base.store,
            collection=base.collection,
            backend=base.backend,
        )


# Environment variable -> setting. Read only by ``server_settings_from_env``.
ENV_VARS: Mapping[str, str] = {
    "VECTORSTREAM_SERVER_HOST": "host",
    "VECTORSTREAM_SERVER_PORT": "port",
    "VECTORSTREAM_API_KEY": "api_key",
    "VECTORSTREAM_SERVER_CORS_ORIGINS": "cors_origins",
    "VECTORSTREAM_SERVER_MAX_BODY_BYTES": "max_body_bytes",
    "VECTORSTREAM_SERVER_MAX_INPUTS": "max_inputs",
    "VECTORSTREAM_SERVER_MAX_TOKENS_PER_INPUT": "max_tokens_per_input",
    "VECTORSTREAM_SERVER_TRUNCATE": "truncate",
    "VECTORSTREAM_SERVER_BATCH_WAIT_MS": "batch_wait_ms",
    "VECTORSTREAM_SERVER_BATCH_MAX_TOKENS": "batch_max_tokens",
    "VECTORSTREAM_SERVER_QUEUE_MAX_INPUTS": "queue_max_inputs",
    "VECTORSTREAM_SERVER_LANES": "lanes",
    "VECTORSTREAM_SERVER_SOLO_MAX_BYTES": "solo_max_bytes",
    "VECTORSTREAM_SERVER_HIGHLIGHT_CACHE_BYTES": "highlight_cache_bytes",
    "VECTORSTREAM_SERVER_RERANK_MODEL": "rerank_model",
    "VECTORSTREAM_SERVER_MAX_RERANK_DOCUMENTS": "max_rerank_documents",
    "VECTORSTREAM_SERVER_KIND": "kind",
    "VECTORSTREAM_SERVER_MAX_IMAGE_PIXELS": "max_image_pixels",
    "VECTORSTREAM_SERVER_LLM": "llm",
    "VECTORSTREAM_SERVER_LLM_CONTEXTS": "llm_contexts",
    "VECTORSTREAM_SERVER_LLM_CONTEXT_BUDGET": "llm_context_budget",
    "VECTORSTREAM_SERVER_LLM_QUEUE": "llm_queue",
    "VECTORSTREAM_SERVER_LLM_STORE_MIN_TOKENS": "llm_store_min_tokens",
    "VECTORSTREAM_SERVER_LLM_ALPHA": "llm_alpha",
    "VECTORSTREAM_SERVER_LLM_YARN": "llm_yarn",
    "VECTORSTREAM_SERVER_LLM_PROFILES": "llm_profiles",
    "VECTORSTREAM_SERVER_LLM_KV_DTYPE": "llm_kv_dtype",
}


def _coerce(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(ServerSettings)}[name]
    try:
        if kind == "int":
            return int(raw)
        if kind in ("float", "float | None"):
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind == "tuple[str, ...]":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"server setting {name} cannot be {raw!r}: {exc}") from exc
    return raw or None


def server_settings_from_env(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> ServerSettings:
    """Settings from ``VECTORSTREAM_SERVER_*`` variables; keyword arguments not ``None`` win."""
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(ServerSettings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown server settings: {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for var, name in ENV_VARS.items():
        if var in env:
            values[name] = _coerce(name, env[var])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerSettings(**values)


__all__ = ["ENV_VARS", "SERVED_KINDS", "ServerSettings", "server_settings_from_env"]
