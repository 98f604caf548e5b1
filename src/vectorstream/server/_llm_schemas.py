"""Request bodies of the LLM routes (OpenAI's chat and completions, and stored contexts).

Fields OpenAI defines keep its names and ranges; ``alpha``, ``profile`` and ``context`` are this
service's extensions (docs/llm.md). Unknown fields are ignored, as OpenAI's API ignores them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # A string, or OpenAI's list of parts of which the text parts are kept.
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(p.get("text", "")) for p in self.content if p.get("type") in ("text", None)
        )

    def as_template(self) -> dict[str, str]:
        # Chat templates know "system"; OpenAI's newer "developer" role means the same.
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None
    # Extensions: DIPR's α for this request (0: exact full attention), or a named profile of
    # attention settings the server was started with; a stored context to put before the prompt.
    alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    profile: str | None = None
    context: str | None = None

    @model_validator(mode="after")
    def _stops(self) -> _Generation:
        stops = self.stop_list()
        if len(stops) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int]

    def prompt_value(self) -> str | list[int]:
        if isinstance(self.prompt, str):
            return self.prompt
        if all(isinstance(p, int) for p in self.prompt):
            return [int(p) for p in self.prompt]
        if len(self.prompt) != 1:
            raise ValueError("one prompt per request (a list must hold exactly one string)")
        return str(self.prompt[0])


class ContextRequest(_Body):
    """A text (kept as tokens, put before any later prompt) or messages (a chat's beginning)."""

    text: str | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _one(self) -> ContextRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give either text or messages")
        if self.text is not None and not self.text.strip():
            raise ValueError("text must not be empty")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self


__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ContextRequest",
    "StreamOptions",
]
