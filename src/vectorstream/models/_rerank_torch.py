"""The cross-encoder in torch: the sequence-classification model, logits out.

It runs the torch backend (CUDA when available) and is what the ONNX export traces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import accepts_token_types, torch_inputs, torch_runtime


def load_classifier(folder: Path, *, eager: bool) -> Any:
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:
        raise MissingDependencyError("transformers", "torch") from exc
    from ._backends import quiet_transformers

    kwargs = {"attn_implementation": "eager"} if eager else {}
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(f"transformers cannot load {folder}: {exc}") from exc
    return model.eval()


class TorchLogits:
    """The sequence-classification model on torch: token ids in, logits out."""

    name = "torch"

    def __init__(self, folder: Path, threads: int | None) -> None:
        self._torch, self.device = torch_runtime(threads)
        self.threads = threads
        self._model = load_classifier(folder, eager=False).to(self.device)
        self._types = accepts_token_types(self._model)

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        kwargs = torch_inputs(torch, self.device, ids, mask, types, self._types)
        try:
            with torch.inference_mode():
                logits = self._model(**kwargs).logits
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


__all__ = ["TorchLogits", "load_classifier"]
