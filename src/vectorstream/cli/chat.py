"""``vectorstream chat``: ask a running service's LLM, with the answer streamed to the terminal.

A thin client of ``POST /v1/chat/completions`` (``vectorstream serve --llm ...``): the question
comes from the argument, or, without one, from a prompt loop that keeps the conversation (a line
per question; an empty line or end of input quits).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ._common import EXIT_FATAL, EXIT_USAGE, err_console, fail

DEFAULT_URL = "http://127.0.0.1:8000"


def register(app: typer.Typer) -> None:
    app.command("chat")(chat_command)


class _StreamError(Exception):
    """An error chunk in the answer's stream (the service failed after it began)."""


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream, until ``[DONE]``; raises on an error chunk."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise _StreamError(chunk["error"].get("message", "the service failed"))
        yield chunk


def _ask(client: Any, body: dict[str, Any], echo: Any) -> tuple[str, dict[str, Any] | None]:
    """Stream one answer through ``echo``; return its text and usage."""
    import httpx

    parts: list[str] = []
    usage = None
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text
                fail(
                    f"{response.status_code}: {message}",
                    EXIT_USAGE if response.status_code < 500 else EXIT_FATAL,
                )
            for chunk in _events(response):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        parts.append(text)
                        echo(text)
    except httpx.TransportError as exc:
        fail(f"cannot reach the service at {client.base_url}: {exc}", EXIT_FATAL)
    except _StreamError as exc:
        echo("\n")
        fail(str(exc), EXIT_FATAL)
    echo("\n")
    return "".join(parts), usage


def chat_command(
    question: Annotated[
        str | None, typer.Argument(help="The question (none: ask interactively, line by line).")
    ] = None,
    url: Annotated[
        str, typer.Option("--url", help="The service's address.", envvar="VECTORSTREAM_URL")
    ] = DEFAULT_URL,
    context: Annotated[
        str | None, typer.Option("--context", help="A stored context's id to put before the chat.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Longest answer, in tokens.")
    ] = 512,
    temperature: Annotated[float, typer.Option("--temperature", help="0: greedy.")] = 0.7,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="DIPR α for this chat (0: exact attention).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="The service's API key.", envvar="VECTORSTREAM_API_KEY"),
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print token counts after each answer.")
    ] = False,
) -> None:
    """Chat with the LLM of a running `vectorstream serve --llm` (answers stream as they come)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    settings: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if context:
        settings["context"] = context
    if alpha is not None:
        settings["alpha"] = alpha

    def echo(text: str) -> None:
        typer.echo(text, nl=False)

    def turn(client: Any, text: str) -> None:
        messages.append({"role": "user", "content": text})
        answer, usage = _ask(client, {**settings, "messages": messages}, echo)
        messages.append({"role": "assistant", "content": answer})
        if stats and usage:
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            err_console.print(
                f"[dim]{usage['prompt_tokens']} prompt tokens ({cached} reused), "
                f"{usage['completion_tokens']} answered[/]"
            )

    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=None) as client:
        if question is not None:
            turn(client, question)
            return
        interactive = os.isatty(0)
        while True:
            try:
                line = input("> " if interactive else "")
            except (EOFError, KeyboardInterrupt):
                break
            if not line.strip():
                break
            turn(client, line)
