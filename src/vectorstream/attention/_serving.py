"""``ChatEngine``: prompts, token-by-token decoding and context reuse for a served LLM.

The engine is synchronous and single-threaded by design: the server runs it on one worker thread
per model (one generation at a time on a CPU), hands it an ``emit`` callback for text deltas and a
``cancelled`` check that it consults between tokens. Every prompt first reuses the longest prefix
stored in the ``ContextStore``; a prompt with at least ``store_min_tokens`` tokens computed anew is
stored after its answer, so the next question about the same document starts from its cache.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, ModelError, VectorstreamError
from ._config import SparseConfig
from ._generate import _pick
from ._integration import ATTENTION_NAME, forward, register
from ._llm_load import LoadedLLM
from ._store_index import ContextStore, StoredContext

__all__ = [
    "ChatEngine",
    "Finished",
    "PromptTooLongError",
    "Sampling",
    "TextStream",
    "load_profiles",
]

log = logging.getLogger("vectorstream.attention.serving")

# α = 0 keeps every key; served as plain full attention (SDPA), which is exact and fastest.
EXACT = SparseConfig(alpha=0.0, mode="full")


class PromptTooLongError(ConfigError):
    """A prompt does not fit the model's context window."""

    def __init__(self, n_tokens: int, window: int) -> None:
        super().__init__(
            f"the prompt has {n_tokens} tokens; this model's context window is {window} tokens "
            "(prompt and answer together)"
        )
        self.n_tokens = n_tokens
        self.window = window


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: temperature 0 is greedy; ``max_tokens`` None fills the window."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The outcome of one generation."""

    finish_reason: str  # "stop", "length" or "cancelled"
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reused_context: str | None
    ttft_s: float
    decode_s: float
    attended_fraction: float
    stored: StoredContext | None = None
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def tokens_per_s(self) -> float:
        steps = self.completion_tokens - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


class TextStream:
    """Turns new tokens into text deltas, holding back what may still become a stop string.

    Decoding the whole answer again each step keeps multi-token characters whole (a trailing
    U+FFFD means the character is not complete yet) at a cost quadratic in the answer's length,
    negligible beside a model step.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._tokens: list[int] = []
        self.emitted = ""
        self.stopped = False

    def add(self, token: int) -> str:
        """The text that became final with ``token`` (may be empty)."""
        self._tokens.append(token)
        text = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        cut = None
        for stop in self._stop:
            at = text.find(stop, max(0, len(self.emitted) - len(stop)))
            if at >= 0 and (cut is None or at < cut):
                cut = at
        if cut is not None:
            self.stopped = True
            return self._advance(text[:cut])
        hold = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return self._advance(text[: len(text) - hold])

    def flush(self) -> str:
        """Whatever was held back, at the end of a generation that did not stop on a string."""
        if self.stopped or not self._tokens:
            return ""
        text = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
        return self._advance(text.rstrip("\ufffd"))

    def _advance(self, upto: str) -> str:
        if len(upto) <= len(self.emitted) or not upto.startswith(self.emitted):
            return ""
        delta = upto[len(self.emitted) :]
        self.emitted = upto
        return delta


def load_profiles(specs: Sequence[str]) -> dict[str, SparseConfig]:
    """Named attention settings from ``NAME=FILE`` specs (JSON objects of SparseConfig fields).

    ``exact`` (full attention) is always there. A calibration's mapping is written as
    ``{"layer_alpha": cal.layer_alpha, "n_last": 512}``.
    """
    import json
    from pathlib import Path

    profiles = {"exact": EXACT}
    known = {f.name for f in dataclasses.fields(SparseConfig)}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"an attention profile is NAME=FILE, got {spec!r}")
        try:
            raw = json.loads(Path(path.strip()).expanduser().read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the attention profile {path!r}: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) - known:
            raise ConfigError(
                f"the attention profile {path!r} must be an object of {sorted(known)}"
            )
        if "layer_alpha" in raw:
            raw["layer_alpha"] = {int(k): float(v) for k, v in raw["layer_alpha"].items()}
        if "flat_layers" in raw:
            raw["flat_layers"] = tuple(raw["flat_layers"])
        profiles[name.strip()] = SparseConfig(**raw)
    return profiles


class ChatEngine:
    """One served model: prompts to token ids, generation with reuse, stored contexts."""

    def __init__(
        self,
        llm: LoadedLLM,
        store: ContextStore,
        *,
        config: SparseConfig | None = None,
        profiles: Mapping[str, SparseConfig] | None = None,
        store_min_tokens: int = 1024,
    ) -> None:
        self.llm = llm
        self.store = store
        self.config = config or SparseConfig()
        self.profiles = dict(profiles or {"exact": EXACT})
        self.store_min_tokens = store_min_tokens
        self._eos = llm.eos_ids
        self._device = next(llm.model.parameters()).device
        register()
        if getattr(llm.model.config, "_attn_implementation", None) != ATTENTION_NAME:
            llm.model.set_attn_implementation(ATTENTION_NAME)

    # -- prompts --------------------------------------------------------------------------------
    def chat_ids(
        self, messages: Sequence[Mapping[str, Any]], generation_prompt: bool = True
    ) -> list[int]:
        tokenizer = self.llm.tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(f"{self.llm.model_id} has no chat template; use /v1/completions")
        try:
            out = tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # jinja errors (a role the template refuses) are bad input
            raise ConfigError(f"the model's chat template refused the messages: {exc}") from exc
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        return [int(t) for t in ids]

    def text_ids(self, text: str) -> list[int]:
        return [int(t) for t in self.llm.tokenizer(text)["input_ids"]]

    def check_prompt(self, n_tokens: int) -> None:
        """400-worthy: an empty prompt, or one leaving no room for a token in the window."""
        if n_tokens == 0:
            raise ConfigError("the prompt is empty")
        if n_tokens >= self.llm.window:
            raise PromptTooLongError(n_tokens, self.llm.window)

    def config_for(self, alpha: float | None = None, profile: str | None = None) -> SparseConfig:
        """The attention settings of one request: a profile, then ``alpha`` over it."""
        base = self.config
        if profile is not None:
            if profile not in self.profiles:
                names = ", ".join(sorted(self.profiles))
                raise ConfigError(
                    f"unknown attention profile {profile!r}; this server has: {names}"
                )
            base = self.profiles[profile]
        if alpha is None:
            return base
        if alpha == 0:
            return EXACT
        return dataclasses.replace(
            base, alpha=alpha, tau=None, mode="auto" if base.mode == "full" else base.mode
        )

    # -- work (on the worker thread) --------------------------------------------------------------
    def _prefill(self, ids: list[int], config: SparseConfig) -> tuple[Any, Any]:
        session, rest = self.store.create_session(ids, config)
        out = forward(
            self.llm.model, torch.tensor([rest], device=self._device), session, use_cache=True
        )
        session.token_ids.extend(rest)
        return session, out

    def generate(
        self,
        ids: list[int],
        sampling: Sampling,
        config: SparseConfig,
        *,
        emit: Callable[[str], None],
        cancelled: Callable[[], bool] = lambda: False,
        origin: Mapping[str, Any] | None = None,
    ) -> Finished:
        """Decode after ``ids``, emitting text as it becomes final; stops between tokens if asked."""
        self.check_prompt(len(ids))
        room = self.llm.window - len(ids)
        limit = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        greedy = sampling.temperature <= 0
        generator = (
            torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        )
        text = TextStream(self.llm.tokenizer, sampling.stop)
        new: list[int] = []
        reason = "length"
        started = time.perf_counter()
        ttft = 0.0
        try:
            with torch.inference_mode():
                session, out = self._prefill(ids, config)
                reused, context_id = session.reused_tokens, session.context_id
                while True:
                    token = _pick(
                        out.logits[0, -1],
                        not greedy,
                        max(sampling.temperature, 1e-6),
                        0,
                        sampling.top_p,
                        generator,
                    )
                    if not new:
                        ttft = time.perf_counter() - started
                    new.append(token)
                    if token in self._eos:
                        reason = "stop"
                        break
                    delta = text.add(token)
                    if delta:
                        emit(delta)
                    if text.stopped:
                        reason = "stop"
                        break
                    if len(new) >= limit:
                        break
                    if cancelled():
                        reason = "cancelled"
                        break
                    out = forward(
                        self.llm.model,
                        torch.tensor([[token]], device=self._device),
                        session,
                        use_cache=True,
                    )
                    session.token_ids.append(token)
        except (RuntimeError, IndexError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        tail = text.flush()
        if tail:
            emit(tail)
        decode_s = time.perf_counter() - started - ttft
        steps = session.stats
        attended = sum(s.attended_fraction for s in steps) / len(steps) if steps else 1.0
        stored = None
        if (
            reason != "cancelled"
            and self.store_min_tokens
            and len(ids) - reused >= self.store_min_tokens
        ):
            stored = self._keep(session, origin)
        return Finished(
            finish_reason=reason,
            text=text.emitted,
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            cached_tokens=reused,
            reused_context=context_id,
            ttft_s=ttft,
            decode_s=decode_s,
            attended_fraction=attended,
            stored=stored,
            token_ids=tuple(new),
        )

    def _keep(self, session: Any, origin: Mapping[str, Any] | None) -> StoredContext | None:
        """Store a long prompt's cache on the fly; a failure costs only the reuse, not the answer."""
        try:
            return self.store.store(session, source="auto", origin=origin or {})
        except (VectorstreamError, OSError) as exc:  # too large for the budget, disk full
            log.warning("not keeping the prompt's context: %s", exc)
        return None

    def create_context(
        self, ids: list[int], origin: Mapping[str, Any], config: SparseConfig | None = None
    ) -> StoredContext:
        """Compute the KV cache of ``ids`` once (reusing any stored prefix) and store it."""
        if not ids:
            raise ConfigError("the context is empty")
        if len(ids) > self.llm.window:
            raise PromptTooLongError(len(ids), self.llm.window)
        cfg = config or self.config
        found, common = self.store.db.longest_prefix(ids)
        if found is not None and common == len(ids) and self.store.get(found).n_tokens == common:
            self.store.touch(found)  # already stored: nothing to compute
            return self.store.get(found)
        try:
            with torch.inference_mode():
                session, _ = self._prefill(ids, cfg)
        except (RuntimeError, IndexError) as exc:
            raise ModelError(f"computing the context failed: {exc}") from exc
        # A graph index pays only where the rule would use it (graph_min keys and more).
        build = cfg.mode == "graph" or len(ids) >= cfg.graph_min
        return self.store.store(session, source="api", origin=origin, build_index=build)
