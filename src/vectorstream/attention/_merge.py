"""Attention over disjoint key sets, merged with log-sum-exp (torch).

Each part (the exact window, the keys DIPR selected) is attended where it lives and returns its
output together with the log of its softmax denominator. Weighting each part's output by
``exp(lse_part − lse_total)`` gives exactly softmax attention over the union of the parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["merge_partials", "partial_attention"]


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
    logits = torch.einsum("...d,...nd->...n", query.float(), keys.float()) * scaling
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    # exp(−inf − (−inf)) would be NaN for an empty part; shift by a finite stand-in instead.
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    weights = torch.exp(logits - safe.unsqueeze(-1))
    out = torch.einsum("...n,...nd->...d", weights, values.float())
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
