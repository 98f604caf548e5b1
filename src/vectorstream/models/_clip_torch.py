"""CLIP's towers on torch: transformers' ``CLIPModel.get_image_features`` /
``get_text_features``, which the ONNX export traces too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import quiet_transformers


def features(out: Any) -> Any:
    # transformers 4 returns the projected tensor; 5 returns an output whose pooler_output it is.
    return out if hasattr(out, "shape") else out.pooler_output


def load_clip(path: Path, **kwargs: Any) -> Any:
    try:
        import torch  # noqa: F401
        from transformers import CLIPModel
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    try:
        with quiet_transformers():
            # float32 whatever the checkpoint stores: newer transformers load float16 weights
            # as float16, which would make the exported graphs float16 too.
            return CLIPModel.from_pretrained(str(path), **kwargs).float().eval()
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(f"transformers cannot load the CLIP model in {path}: {exc}") from exc


class TorchTowers:
    """transformers' CLIPModel under ``torch.inference_mode``; CUDA when available."""

    name = "torch"

    def __init__(self, path: Path, threads: int | None) -> None:
        import torch

        self._torch = torch
        if threads and threads > 0:
            torch.set_num_threads(threads)  # process-wide: only when asked for
        self.threads = threads
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = load_clip(path).to(self.device)

    def _run(self, method: str, **inputs: np.ndarray) -> np.ndarray:
        torch = self._torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        try:
            with torch.inference_mode():
                out = features(getattr(self._model, method)(**tensors))
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run("get_image_features", pixel_values=pixel_values)

    def texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._run("get_text_features", input_ids=input_ids, attention_mask=attention_mask)


__all__ = ["TorchTowers", "features", "load_clip"]
