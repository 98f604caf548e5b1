"""Late chunking: chunk vectors pooled from token states computed with the surrounding text.

A dense model reads a whole text (in overlapping windows no longer than its positions), and each
chunk's vector is the mean of the token states inside the chunk's character span, so a chunk's
vector knows its context ("it" in one chunk still means what the chunk before named). Each token's
state comes from the window where it sits farthest from a window edge (the document's own ends
count as context, not as edges). The mean runs over the span's own tokens, never the special
tokens, whatever pooling the model uses for whole texts.

    plan = late_plan(embedder, text, spans)        # tokenising: windows and which state each span takes
    vectors = embed_late(embedder, [plan, ...])   # inference: (n_spans, dim) per plan
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tokenizers

from ._embedder import pad_batch, token_budget_batches

# Share of a window that overlaps the next one: each token then has at least this much context
# on both sides, except at the document's ends.
OVERLAP = 0.25


@dataclass(frozen=True, slots=True, eq=False)
class LatePlan:
    """One text's windows (model inputs) and, per span, the (window, position) of its tokens."""

    windows: tuple[tokenizers.Encoding, ...]
    picks: tuple[tuple[tuple[int, int], ...], ...]  # per span: (window index, token position)

    @property
    def tokens(self) -> int:
        return sum(len(w.ids) for w in self.windows)


def late_plan(embedder: Any, text: str, spans: Sequence[tuple[int, int]]) -> LatePlan:
    """Tokenise ``text`` into overlapping windows and choose, for each character span, the token
    states to average. A span with no token of its own (whitespace only) raises ``ValueError``."""
    content = max(1, embedder.max_tokens - embedder.num_special_tokens)
    whole = embedder.tokenizer.encode(text, add_special_tokens=False)
    offsets = whole.offsets
    n = len(offsets)
    step = max(1, content - int(content * OVERLAP))
    ranges: list[tuple[int, int]] = []
    i = 0
    while True:
        j = min(n, i + content)
        ranges.append((i, j))
        if j >= n:
            break
        i += step
    windows: list[tokenizers.Encoding] = []
    best: dict[int, tuple[float, int, int]] = {}  # token start char -> (distance, window, position)
    for w, (i, j) in enumerate(ranges):
        base = offsets[i][0] if n else 0
        stop = offsets[j - 1][1] if n else len(text)
        encoding = embedder.tokenize([text[base:stop]])[0]
        windows.append(encoding)
        positions = [
            p
            for p, (special, (a, b)) in enumerate(
                zip(encoding.special_tokens_mask, encoding.offsets, strict=True)
            )
            if not special and b > a
        ]
        for k, p in enumerate(positions):
            left = float("inf") if i == 0 else k
            right = float("inf") if j >= n else len(positions) - 1 - k
            distance = min(left, right)
            start = base + encoding.offsets[p][0]
            seen = best.get(start)
            if seen is None or distance > seen[0]:
                best[start] = (distance, w, p)
    starts = sorted(best)
    picks: list[tuple[tuple[int, int], ...]] = []
    for a, b in spans:
        lo = np.searchsorted(starts, a, side="left")
        hi = np.searchsorted(starts, b, side="left")
        chosen = tuple((best[s][1], best[s][2]) for s in starts[lo:hi])
        if not chosen:
            raise ValueError(f"span {a}:{b} holds no token of the text (whitespace only?)")
        picks.append(chosen)
    return LatePlan(tuple(windows), tuple(picks))


def embed_late(embedder: Any, plans: Sequence[LatePlan]) -> list[np.ndarray]:
    """Run every plan's windows (token-budget batches across plans) and pool each span: one
    ``(n_spans, dim)`` array per plan, post-processed as the embedder's own vectors are."""
    flat = [(p, w) for p, plan in enumerate(plans) for w in range(len(plan.windows))]
    encodings = [plans[p].windows[w] for p, w in flat]
    lengths = [len(e.ids) for e in encodings]
    states: list[np.ndarray | None] = [None] * len(flat)
    for batch in token_budget_batches(lengths, embedder.token_budget):
        ids, mask, types = pad_batch(encodings, batch, embedder._pad_id)
        out = np.asarray(embedder.backend_impl.run(ids, mask, types), dtype=np.float32)
        for row, i in enumerate(batch):
            states[i] = out[row, : lengths[i]]
    index = {key: k for k, key in enumerate(flat)}
    results: list[np.ndarray] = []
    for p, plan in enumerate(plans):
        pooled = np.empty((len(plan.picks), embedder.full_dim), dtype=np.float32)
        for s, chosen in enumerate(plan.picks):
            rows = []
            for w, position in chosen:
                window_states = states[index[(p, w)]]
                assert window_states is not None
                rows.append(window_states[position])
            pooled[s] = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
        results.append(embedder._postprocess(pooled))
    return results


__all__ = ["OVERLAP", "LatePlan", "embed_late", "late_plan"]
