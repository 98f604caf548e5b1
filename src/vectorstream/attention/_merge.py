"""Attention over disjoint key sets, merged with log-sum-exp (torch).

Each part (the exact window, the keys DIPR selected) is attended where it lives and returns its
output together with the log of its softmax denominator. Weighting each part's output by
``exp(lse_part − lse_total)`` gives exactly softmax attention over the union of the parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["attend_logits", "merge_partials", "partial_attention"]


def partial_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scaling: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``query`` (..., d) over ``keys`` (..., n, d) and ``values`` (..., n, dv).

    Returns ``(output (..., dv), lse (...))``. ``mask`` (..., n) marks the keys that count; a part with
    no key returns a zero output and ``lse = −inf``, which the merge then ignores.
    """
    logits = (query.float().unsqueeze(-2) @ keys.float().transpose(-1, -2)).squeeze(-2) * scaling
    return attend_logits(logits, values, mask)


def attend_logits(
    logits: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``partial_attention`` from scaled logits (..., n) already computed (the scan's scores).

    ``values`` is (..., n, dv), or has one leading dimension fewer than ``logits`` has, in which
    case it is shared by every row of that dimension (the query heads of one KV head).
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    # exp(−inf − (−inf)) would be NaN for an empty part; shift by a finite stand-in instead.
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    weights = torch.exp(logits - safe.unsqueeze(-1))
    if values.dim() == logits.dim():
        # Shared values: (H, g, n) @ (H, n, dv), one matrix product per KV head.
        out = weights @ values.float()
    else:
        out = (weights.unsqueeze(-2) @ values.float()).squeeze(-2)
    return out, lse


def merge_partials(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine ``(output, lse)`` pairs of disjoint key sets into attention over their union.

    Outputs are unnormalised-by-the-union softmax averages of their own part; the merge rescales
    each by its share of the total mass, ``exp(lse_i − logsumexp(lse))``.
    """
    if not parts:
        raise ValueError("merge_partials needs at least one part")
    lses = torch.stack([lse for _, lse in parts], dim=0)
    total = torch.logsumexp(lses, dim=0)
    safe_total = torch.where(torch.isinf(total), torch.zeros_like(total), total)
    out = torch.zeros_like(parts[0][0])
    for (part_out, _), lse in zip(parts, lses, strict=True):
        share = torch.exp(lse - safe_total)
        out = out + share.unsqueeze(-1) * part_out
    return out
