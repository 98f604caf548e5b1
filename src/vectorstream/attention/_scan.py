"""The flat DIPR step over a layer's parts, reading only the rows it needs.

The window is read exactly. The middle is scored against the layer's bfloat16 ``Sketch`` when it
has one (half the bytes of the float32 keys, and the stored keys' pages stay on disk), with the
threshold widened by the sketch's error bound so no key exact DIPR keeps is lost; the candidates'
exact keys and values are then gathered (one gather per KV head, shared by its query heads) and
DIPR is applied to their exact scores. The result equals the exact flat scan: the same keys are
attended, with the same float32 scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._layers import KVRows, Sketch
from ._merge import attend_logits, merge_partials

__all__ = ["ScanResult", "scan_step", "window_scores"]


@dataclass(frozen=True)
class ScanResult:
    """One layer's output (H_kv, g, d_v) and, per query head, keys selected and keys exactly read."""

    out: torch.Tensor
    selected: tuple[int, ...]
    exact: tuple[int, ...]


def window_scores(
    rows: KVRows, q: torch.Tensor, head: int, tail: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact scores (H_kv, g, w) of the window [0, head) ∪ [tail, n), and its values."""
    k_head, v_head = rows.span(0, head)
    k_tail, v_tail = rows.span(tail, rows.n)
    k_win = torch.cat([k_head, k_tail], dim=1).float()
    v_win = torch.cat([v_head, v_tail], dim=1)
    return q @ k_win.transpose(1, 2), v_win


def scan_step(
    rows: KVRows,
    q: torch.Tensor,
    head: int,
    tail: int,
    beta: float,
    scaling: float,
    sketch: Sketch | None,
) -> ScanResult:
    """DIPR over ``rows`` for queries ``q`` (H_kv, g, d): window [0, head) ∪ [tail, n) + middle."""
    h_kv, g, _ = q.shape
    raw_win, v_win = window_scores(rows, q, head, tail)
    best = raw_win.amax(-1)
    parts = [attend_logits(raw_win * scaling, v_win)]
    zero = (0,) * (h_kv * g)
    if tail <= head:
        return ScanResult(merge_partials(parts), zero, zero)

    if sketch is not None:
        approx, err = sketch.scores(q, head, tail)  # (H_kv, g, m) each
        # |score − bf16 score| ≤ err per key: the best exact score is at least the best lower
        # bound, and a key can reach the floor only if its upper bound does.
        top = torch.maximum(best, (approx - err).amax(-1))
        cand = approx + err >= (top - beta).unsqueeze(-1)
    else:
        k_mid, _ = rows.span(head, tail)
        approx = q @ k_mid.float().transpose(1, 2)
        cand = approx >= (torch.maximum(best, approx.amax(-1)) - beta).unsqueeze(-1)
    if math.isinf(beta):
        cand = torch.ones_like(cand)

    # GQA: one set of rows per KV head, the union of its query heads' candidates.
    per_head = [torch.nonzero(cand[h].any(0)).flatten() + head for h in range(h_kv)]
    width = max(1, max(int(i.numel()) for i in per_head))
    idx = torch.full((h_kv, width), head, dtype=torch.long)
    valid = torch.zeros((h_kv, width), dtype=torch.bool)
    for h, pos in enumerate(per_head):
        idx[h, : pos.numel()] = pos
        valid[h, : pos.numel()] = True
    ks, vs = zip(*(rows.take(h, idx[h]) for h in range(h_kv)), strict=True)
    k_sel = torch.stack(ks).float()  # (H_kv, S, d)
    v_sel = torch.stack(vs)
    raw = q @ k_sel.transpose(1, 2)  # (H_kv, g, S): exact float32 scores
    raw = raw.masked_fill(~valid.unsqueeze(1), float("-inf"))
    top = torch.maximum(best, raw.amax(-1))
    keep = (raw >= (top - beta).unsqueeze(-1)) & valid.unsqueeze(1)
    parts.append(attend_logits(raw * scaling, v_sel, keep))
    selected = tuple(keep.sum(-1).reshape(-1).tolist())
    exact = tuple(int(valid[h].sum()) for h in range(h_kv) for _ in range(g))
    return ScanResult(merge_partials(parts), selected, exact)
