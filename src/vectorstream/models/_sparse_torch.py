"""SPLADE on torch: the folder's masked LM, with the SPLADE head applied in place to its logits.

Also the source of an ONNX export: :func:`export_logits` traces the masked LM to a logits graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import accepts_token_types, torch_inputs, torch_runtime
from ._sparse_folder import SparseFolder


def load_mlm(folder: SparseFolder, *, eager: bool = False) -> Any:
    """The folder's ``AutoModelForMaskedLM``, refusing one whose MLM head would be made up."""
    try:
        from transformers import AutoModelForMaskedLM
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._backends import quiet_transformers

    kwargs: dict[str, Any] = {"output_loading_info": True}
    if eager:
        # Eager attention exports plain MatMul/Softmax that ORT's optimiser fuses.
        kwargs["attn_implementation"] = "eager"
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(
                str(folder.transformer_path), **kwargs
            )
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(
            f"transformers cannot load {folder.transformer_path} as a masked LM: {exc}"
        ) from exc
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(
            f"{folder.path} has no complete masked-LM head: the weights lack {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}"
        )
    return model.eval()


class TorchEngine:
    """The masked LM under ``inference_mode``; the head works in place on the model's logits."""

    name = "torch"

    def __init__(self, folder: SparseFolder, threads: int | None) -> None:
        self.threads = threads if threads and threads > 0 else None
        self._torch, self.device = torch_runtime(self.threads)
        self._model = load_mlm(folder).to(self.device)
        self._types = accepts_token_types(self._model)
        self._pooling = folder.pooling
        self._log1p_twice = folder.activation == "log1p_relu"

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        kwargs = torch_inputs(torch, self.device, ids, mask, types, self._types)
        try:
            with torch.inference_mode():
                logits = self._model(**kwargs).logits  # (batch, tokens, vocab)
                padding = (kwargs["attention_mask"] == 0).unsqueeze(-1)
                if self._pooling == "max":
                    # log1p(relu(.)) never decreases, so it commutes with max: pool the raw
                    # logits (padding set to 0, as the reference's mask product does) and
                    # transform only the (batch, vocab) result.
                    pooled = logits.masked_fill_(padding, 0.0).amax(dim=1).relu_().log1p_()
                    if self._log1p_twice:
                        pooled.log1p_()
                else:
                    logits.relu_().log1p_()
                    if self._log1p_twice:
                        logits.log1p_()
                    pooled = logits.masked_fill_(padding, 0.0).sum(dim=1)
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return pooled.float().cpu().numpy()


def export_logits(folder: SparseFolder, target: Path) -> Path:
    """Trace the masked LM to an ONNX graph whose output is its logits (batch, tokens, vocab)."""
    try:
        import torch  # noqa: F401  (here only to name the missing extra)
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._export import export_token_graph

    model = load_mlm(folder, eager=True)
    return export_token_graph(model, target, lambda out: out.logits, "logits", 3)


__all__ = ["TorchEngine", "export_logits", "load_mlm"]
