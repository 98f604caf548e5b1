"""Shared by the real-model attention evaluations: model, long texts, baselines, output.

The scripts beside this file import it as ``_attention_common`` (its folder put on the path),
a name apart from ``benchmarks/_common.py``, so both can be loaded in one process.

- ``load_model("smollm2" | "tiny")``: SmolLM2-135M-Instruct through the server's loader, or
  a tiny random Llama built from a config (tests, smoke runs); either uses the ``"vectorstream"``
  attention implementation.
- ``text_ids``: a long natural-language context, the standard library's own documentation
  (``vectorstream.samples.build_sample_corpus``, plain text) tokenised; random ids for the tiny
  model.
- ``EvalSession``: a ``Session`` whose decode steps can also select keys as the baselines do:
  window only (StreamingLLM: ``n_init`` sinks plus a longer recent window) or exact top-k of the
  middle, each with a per-layer budget of keys, built from the package's ``partial_attention``.
- ``write_result`` / ``format_table``: JSON under ``benchmarks/results/`` and a plain table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from threadpoolctl import threadpool_limits
from transformers import LlamaConfig, LlamaForCausalLM

from vectorstream.attention import (
    ContextDB,
    KeyGraph,
    LayerStats,
    Session,
    SparseConfig,
    StepStats,
    dipr,
    forward,
    partial_attention,
    register,
)

__all__ = [
    "ContextDB",
    "KeyGraph",
    "SparseConfig",
    "dipr",
    "forward",
]  # re-exported for the scripts

RESULTS = Path(__file__).resolve().parents[1] / "results"
TINY_VOCAB = 256

Selector = Literal["dipr", "window", "topk", "mass"]


# -- model and text --------------------------------------------------------------------------------
def set_threads(threads: int) -> None:
    """One thread by default: the machine is shared and thread hand-offs stall decode steps."""
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def tiny_model(seed: int = 0, layers: int = 2, max_positions: int = 16384) -> Any:
    """A random Llama (GQA: 4 query heads over 2 KV heads) for tests and smoke runs."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
    )
    model = LlamaForCausalLM(cfg)
    model.set_attn_implementation(register())
    return model.eval()


def load_model(kind: str, yarn: float = 0.0) -> tuple[Any, Any]:
    """``(model, tokenizer)``; the tokenizer is ``None`` for the tiny random model.

    ``yarn`` > 1 stretches the model's positions by that factor with YaRN (its trained length
    times ``yarn``), as a server does to run a model beyond the length it was trained on.
    """
    if kind == "tiny":
        return tiny_model(), None
    if kind != "smollm2":
        raise SystemExit(f"unknown model {kind!r}: choose smollm2 or tiny")
    from vectorstream.attention._llm_load import load_llm

    # The server's loader: the GGUF de-quantised once into the cache, then loaded from there.
    llm = load_llm("smollm2", yarn=yarn if yarn > 1 else None)
    model, tok = llm.model, llm.tokenizer
    model.set_attn_implementation(register())
    return model.eval(), tok


def corpus_text(min_chars: int, seed: int = 0) -> str:
    """Plain-text standard-library documentation, at least ``min_chars`` long (repeated if short)."""
    from vectorstream.samples import build_sample_corpus

    with tempfile.TemporaryDirectory() as tmp:
        info = build_sample_corpus(tmp, documents=60, formats=("txt",), seed=seed)
        parts = [p.read_text(errors="replace") for p in sorted(Path(tmp).glob("*.txt"))]
        del info
    text = "\n\n".join(parts)
    while len(text) < min_chars:
        text = text + "\n\n" + text
    return text


def text_ids(tokenizer: Any, n_tokens: int, seed: int = 0) -> list[int]:
    """``n_tokens`` ids of a long natural text (random ids when there is no tokenizer)."""
    if tokenizer is None:
        rng = random.Random(seed)
        return [rng.randrange(TINY_VOCAB) for _ in range(n_tokens)]
    text = corpus_text(6 * n_tokens, seed)
    ids = tokenizer(text)["input_ids"]
    while len(ids) < n_tokens:
        ids = ids + ids
    return [int(t) for t in ids[:n_tokens]]


def encode(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


# -- sessions -------------------------------------------------------------------------------------
class EvalSession(Session):
    """A ``Session`` that can also answer decode steps as a fixed-budget baseline.

    ``selector="dipr"`` is the package's own rule (flat scan or graph, as configured).
    ``"window"`` attends the first ``n_init`` tokens and the last ``n_last + budget[layer]``
    (StreamingLLM at that budget); ``"topk"`` attends the window plus the ``budget[layer]`` middle
    keys of highest score per query head (an exact top-k, the best a fixed-k method can do).
    ``"mass"`` attends the window plus, per query head, the fewest middle keys that leave out at
    most ``mass`` of the softmax weight (top-p with all scores known: an oracle of how few keys a
    given error in the weights needs, not a method a search index can answer).
    """

    def __init__(self, config: SparseConfig | None = None, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.selector: Selector = "dipr"
        self.budget: dict[int, int] = {}
        self.mass = 0.0

    def attend(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float,
    ) -> tuple[torch.Tensor, Any]:
        if self.selector == "dipr":
            return super().attend(layer_idx, query, key, value, scaling)
        n = key.shape[2]
        h_q, h_kv, d = query.shape[1], key.shape[1], query.shape[-1]
        g = h_q // h_kv
        keys = key[0].float()  # (H_kv, n, d)
        values = value[0].float()
        q = query[0, :, 0, :].float().reshape(h_kv, g, d)
        head = min(self.sparse.n_init, n)
        tail = max(head, n - self.sparse.n_last)
        k = min(self.budget.get(layer_idx, 0), tail - head)
        keep = torch.zeros(h_kv, g, n, dtype=torch.bool)
        keep[..., :head] = True
        keep[..., tail:] = True
        if self.selector == "mass":
            weights = torch.softmax((q @ keys.transpose(1, 2)) * scaling, dim=-1)[..., head:tail]
            ascending, order = weights.sort(dim=-1)
            # Drop the lightest keys while what is dropped stays within the allowed weight.
            dropped = ascending.cumsum(-1) <= self.mass
            keep[..., head:tail] = ~torch.zeros_like(dropped).scatter(-1, order, dropped)
        elif self.selector == "window":
            keep[..., tail - k : tail] = True
        elif k > 0:
            raw = q @ keys[:, head:tail].transpose(1, 2)  # (H_kv, g, m)
            keep.scatter_(-1, raw.topk(k, dim=-1).indices + head, True)
        out, _ = partial_attention(q, keys.unsqueeze(1), values.unsqueeze(1), scaling, keep)
        window = head + (n - tail)
        touched = (tail - head if self.selector in ("topk", "mass") else k,) * h_q
        selected = tuple(keep[..., head:tail].sum(-1).reshape(-1).tolist())
        self._record(LayerStats(layer_idx, "flat", n, window, selected, touched))
        return out.reshape(1, 1, h_q, -1).to(query.dtype), "flat"


def prefill(
    model: Any, ids: Sequence[int], max_queries: int = 0, config: SparseConfig | None = None
) -> tuple[Session, torch.Tensor]:
    """An exact prefill of ``ids``: the session and the last position's logits.

    A prefill is exact whatever the config; ``config`` (default: full attention, sampling
    ``max_queries`` queries per layer) matters for later steps and for which layers get a graph.
    """
    base = Session(config or SparseConfig(mode="full", max_queries=max_queries))
    with torch.inference_mode():
        logits = forward(model, torch.tensor([list(ids)]), base).logits
    base.token_ids = list(ids)
    return base, logits[0, -1].float()


def fork(
    base: Session,
    config: SparseConfig,
    selector: Selector = "dipr",
    budget: Mapping[int, int] | None = None,
    mass: float = 0.0,
) -> EvalSession:
    """A copy of ``base``'s cache that decodes with ``config`` (and a baseline selector)."""
    session = EvalSession.from_kv(base.kv(), config, base.token_ids)
    assert isinstance(session, EvalSession)
    session.selector = selector
    session.budget = dict(budget or {})
    session.mass = mass
    if base.graphs:
        session.install_graphs(base.graphs, base.graph_limit)
    return session


def teacher_forced(model: Any, session: Session, tokens: Sequence[int]) -> torch.Tensor:
    """Feed ``tokens`` one decode step at a time; each step's logits, (len(tokens), vocab)."""
    rows = []
    with torch.inference_mode():
        for token in tokens:
            out = forward(model, torch.tensor([[int(token)]]), session)
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


def chunk_logits(model: Any, session: Session, tokens: Sequence[int]) -> torch.Tensor:
    """Exact (full-attention) logits of every position of ``tokens`` run as one chunk."""
    with torch.inference_mode():
        out = forward(model, torch.tensor([list(tokens)]), session)
    return out.logits[0].float()


def mean_fraction(stats: Sequence[StepStats], attr: str = "attended_fraction") -> float:
    return sum(getattr(s, attr) for s in stats) / len(stats) if stats else 0.0


def layer_budget(stats: Sequence[StepStats]) -> dict[int, int]:
    """Mean keys DIPR selected per layer (over steps and query heads): the baselines' budget."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for step in stats:
        for layer in step.layers:
            heads = layer.selected or (0,)
            sums[layer.layer] = sums.get(layer.layer, 0.0) + sum(heads) / len(heads)
            counts[layer.layer] = counts.get(layer.layer, 0) + 1
    return {layer: round(sums[layer] / counts[layer]) for layer in sums}


# -- output -------------------------------------------------------------------------------------------
def machine(threads: int) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, payload: Mapping[str, Any], out: Path | None = None) -> Path:
    """Write ``payload`` as ``benchmarks/results/attention_<name>.json`` (or ``out``)."""
    path = out or RESULTS / f"attention_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A right-aligned text table; floats get 4 significant digits, ``None`` is a dash."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = [" ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += [" ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def add_common_args(parser: Any, lengths: Sequence[int], alphas: Sequence[float]) -> None:
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(lengths))
    parser.add_argument("--alphas", type=float, nargs="*", default=list(alphas))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--n-last", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
