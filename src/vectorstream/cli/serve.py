"""``vectorstream serve``: the HTTP service on uvicorn (one process, one model, micro-batched)."""

from __future__ import annotations

import logging

import typer

log = logging.getLogger("vectorstream.cli.serve")


def serve_command(
    store: str | None = typer.Option(
        None, "--store", help="Store URI (default: VECTORSTREAM_STORE or the config)."
    ),
    collection: str | None = typer.Option(
        None, "--collection", help="Default collection to search."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model spec: a folder, hub id or alias."
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="dense | sparse | multivector | image (default: what the model folder says).",
    ),
    rerank_model: str | None = typer.Option(
        None,
        "--rerank-model",
        help="A cross-encoder (folder, hub id or alias) to serve POST /v1/rerank (default: none).",
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="onnx or torch (default: automatic)."
    ),
    host: str | None = typer.Option(
        None, "--host", help="Address to bind (default 127.0.0.1: this machine only)."
    ),
    port: int | None = typer.Option(None, "--port", help="TCP port (default 8000)."),
    api_key: str | None = typer.Option(
        None, "--api-key", help="Require 'Authorization: Bearer KEY' (or set VECTORSTREAM_API_KEY)."
    ),
    cors_origin: list[str] = typer.Option(
        [],
        "--cors-origin",
        help="Allow browser calls from this origin (repeatable; default: none).",
    ),
    truncate: bool | None = typer.Option(
        None, "--truncate/--no-truncate", help="Cut over-long inputs instead of answering 400."
    ),
    lanes: int | None = typer.Option(
        None,
        "--lanes",
        help="Batches in the model at once, each with cores/lanes threads (default: automatic).",
    ),
    llm: str | None = typer.Option(
        None,
        "--llm",
        help="Also serve an LLM at /v1/chat/completions: an HF folder, a .gguf file or 'smollm2'.",
    ),
    llm_contexts: str | None = typer.Option(
        None, "--llm-contexts", help="Folder of the LLM's stored contexts (default: in the cache)."
    ),
    llm_context_budget: int | None = typer.Option(
        None,
        "--llm-context-budget",
        help="Disk bytes for stored contexts; the least recently used go first (default 8 GiB).",
    ),
    llm_queue: int | None = typer.Option(
        None, "--llm-queue", help="Generations that may wait for the model (default 8; then 503)."
    ),
    llm_store_min_tokens: int | None = typer.Option(
        None,
        "--llm-store-min-tokens",
        help="Store prompts with at least this many new tokens for reuse (default 1024; 0: never).",
    ),
    llm_alpha: float | None = typer.Option(
        None, "--llm-alpha", help="Default DIPR α of decoding (0: exact full attention)."
    ),
    llm_yarn: float | None = typer.Option(
        None,
        "--llm-yarn",
        help="Serve the LLM at FACTOR times its trained length (positions stretched by YaRN).",
    ),
    llm_profile: list[str] = typer.Option(
        [],
        "--llm-profile",
        help="NAME=FILE: attention settings a request selects with 'profile' (repeatable).",
    ),
    llm_kv_dtype: str | None = typer.Option(
        None,
        "--llm-kv-dtype",
        help="'float16': store a float32 LLM's contexts at half size (long ones decode faster).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
) -> None:
    """Serve embeddings (OpenAI-compatible), reranking, search, highlights and ingest jobs over HTTP."""
    import uvicorn

    from ..errors import VectorstreamError
    from ..server import create_app, server_settings_from_env

    try:
        settings = server_settings_from_env(
            store=store,
            collection=collection,
            model=model,
            kind=kind,
            rerank_model=rerank_model,
            backend=backend,
            host=host,
            port=port,
            api_key=api_key,
            cors_origins=tuple(cors_origin) or None,
            truncate=truncate,
            lanes=lanes,
            llm=llm,
            llm_contexts=llm_contexts,
            llm_context_budget=llm_context_budget,
            llm_queue=llm_queue,
            llm_store_min_tokens=llm_store_min_tokens,
            llm_alpha=llm_alpha,
            llm_yarn=llm_yarn,
            llm_profiles=tuple(llm_profile) or None,
            llm_kv_dtype=llm_kv_dtype,
        )
        app = create_app(settings)
    except VectorstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        typer.echo(f"warning: serving on {settings.host} without an API key", err=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        # The body limit is enforced by the app (413); keep-alive and concurrency are uvicorn's.
        timeout_keep_alive=30,
        access_log=False,
    )
    uvicorn.Server(config).run()


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""
    app.command("serve")(serve_command)
