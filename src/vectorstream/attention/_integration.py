"""Registration with transformers: an attention function and its mask under one name.

``register()`` adds ``"vectorstream"`` to ``AttentionInterface`` (the function below) and to
``AttentionMaskInterface`` (the SDPA mask, because everything that is not a sparse decode step is
handed to SDPA unchanged). Models then run unmodified with ``attn_implementation="vectorstream"``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ._session import active_session

__all__ = ["ATTENTION_NAME", "forward", "register", "vectorstream_attention"]

ATTENTION_NAME = "vectorstream"

_CACHE_ARG: dict[type, str] = {}


def forward(model: Any, input_ids: torch.Tensor, cache: Any, **kwargs: Any) -> Any:
    """``model(input_ids, ...)`` with ``cache`` passed under the name the model's forward takes.

    Newer transformers name the argument ``cache`` and deprecate ``past_key_values`` (removal
    announced for 5.40); older ones know only ``past_key_values``.
    """
    kind = type(model)
    name = _CACHE_ARG.get(kind)
    if name is None:
        params = inspect.signature(kind.forward).parameters
        name = _CACHE_ARG[kind] = "cache" if "cache" in params else "past_key_values"
    return model(input_ids=input_ids, **{name: cache}, **kwargs)


def vectorstream_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Sparse DIPR attention for a ``Session``'s decode steps; SDPA for everything else."""
    layer_idx = getattr(module, "layer_idx", None)
    session = active_session(layer_idx, key)
    sparse_step = (
        session is not None
        and layer_idx is not None
        and query.shape[0] == 1
        and query.shape[2] == 1
        and not module.training
        # A padded batch-1 mask would exclude keys the sparse path cannot know about.
        and (
            attention_mask is None
            or attention_mask.dtype != torch.bool
            or bool(attention_mask.all())
        )
    )
    if session is not None and layer_idx is not None and not sparse_step:
        session._observe(layer_idx, query)
    if sparse_step:
        assert session is not None and layer_idx is not None
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out, mode = session.attend(layer_idx, query, key, value, scale)
        if mode != "full":
            return out, None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def register() -> str:
    """Register the attention function and mask as ``"vectorstream"``; returns the name."""
    AttentionInterface.register(ATTENTION_NAME, vectorstream_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME
