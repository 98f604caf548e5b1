"""``generate``: greedy or sampled decoding over a ``Session`` (optionally reusing a ``ContextDB``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, ModelError
from ._config import SparseConfig
from ._contextdb import ContextDB, _as_ids
from ._integration import ATTENTION_NAME, forward, register
from ._session import Session

__all__ = ["Generation", "generate"]

log = logging.getLogger("vectorstream.attention.generate")


@dataclass(frozen=True)
class Generation:
    """New tokens, the session (its cache holds every token but the last new one) and timings."""

    tokens: tuple[int, ...]
    session: Session
    reused_tokens: int
    prefill_s: float
    decode_s: float

    @property
    def tokens_per_s(self) -> float:
        steps = max(0, len(self.tokens) - 1)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


def _pick(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    if not do_sample:
        return int(logits.argmax())
    scores = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        drop = torch.cumsum(sorted_p, dim=0) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    model: Any,
    input_ids: Any,
    *,
    session: Session | None = None,
    db: ContextDB | None = None,
    config: SparseConfig | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
) -> Generation:
    """Decode up to ``max_new_tokens`` after ``input_ids`` with DIPR sparse attention.

    With ``session`` the ids continue that session; with ``db`` the longest stored prefix is reused;
    otherwise a fresh session is made from ``config``. The model's attention implementation is set
    to ``"vectorstream"`` (registered on first use); prefill is exact, decode steps are sparse.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ConfigError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    ids = _as_ids(input_ids)
    if not ids:
        raise ConfigError("input_ids is empty")
    register()
    if getattr(model.config, "_attn_implementation", None) != ATTENTION_NAME:
        log.debug("switching the model's attention implementation to %s", ATTENTION_NAME)
        model.set_attn_implementation(ATTENTION_NAME)
    if session is None:
        if db is not None:
            session, ids = db.create_session(ids, config)
        else:
            session = Session(config)
    reused = session.reused_tokens
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(model.parameters()).device
    new: list[int] = []
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            out = forward(model, torch.tensor([ids], device=device), session, use_cache=True)
            session.token_ids.extend(ids)
            prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            while True:
                token = _pick(out.logits[0, -1], do_sample, temperature, top_k, top_p, generator)
                new.append(token)
                if token in eos or len(new) >= max_new_tokens:
                    break
                out = forward(
                    model, torch.tensor([[token]], device=device), session, use_cache=True
                )
                session.token_ids.append(token)
            decode_s = time.perf_counter() - start
    except (RuntimeError, IndexError) as exc:
        raise ModelError(f"generation failed: {exc}") from exc
    return Generation(tuple(new), session, reused, prefill_s, decode_s)
