"""The ColBERT head in torch: transformer → Dense layers → L2 normalisation, as one module.

It runs the torch backend (CUDA when available) and is what the ONNX export traces.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import accepts_token_types, quiet_transformers, torch_runtime
from ._colbert_folder import ColbertFolder, DenseLayer


class TorchRunner:
    """The same head as the graph, run by torch (CUDA when available)."""

    name = "torch"

    def __init__(self, folder: ColbertFolder, threads: int | None) -> None:
        self._torch, self.device = torch_runtime(threads)
        self.threads = threads
        self._model = torch_head(folder, eager=False).to(self.device).eval()

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        args = [torch.from_numpy(a).to(self.device) for a in (ids, mask, types)]
        try:
            with torch.inference_mode():
                out = self._model(*args)
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def _activation(name: str) -> Any:
    import torch

    module_name, _, cls_name = name.rpartition(".")
    if not module_name.startswith("torch."):
        raise ModelError(f"activation {name!r} is not a torch.nn module; only torch.* ones load")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"unknown activation {name!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ModelError(f"activation {name!r} is not a torch.nn.Module class")
    return cls()


def _state_dict(weights: Path) -> dict[str, Any]:
    import torch

    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(weights)))
        return dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    except Exception as exc:  # safetensors and torch.load raise many kinds for bad files
        raise ModelError(f"cannot read weights {weights}: {exc}") from exc


def _torch_dense(layer: DenseLayer, stanford: bool) -> Any:
    import torch

    class Dense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
            self.activation = _activation(layer.activation)
            if layer.residual and layer.in_features != layer.out_features:
                self.residual = torch.nn.Linear(layer.in_features, layer.out_features, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activation(self.linear(x))
            if layer.residual:
                out = out + (self.residual(x) if hasattr(self, "residual") else x)
            return out

    dense = Dense()
    state = _state_dict(layer.weights)
    if stanford:
        state = {"linear.weight": state["linear.weight"]}
    try:
        dense.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"Dense weights {layer.weights} do not fit the layer: {exc}") from exc
    return dense


@contextlib.contextmanager
def _quiet_load_report(quiet: bool) -> Iterator[None]:
    """Stanford ColBERT keeps ``linear.weight`` beside the encoder's: transformers reports it as
    unexpected on every load, which is expected here (the projection is loaded separately)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def torch_head(folder: ColbertFolder, *, eager: bool) -> Any:
    """transformer → Dense layers → L2 normalisation, as one torch module."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    try:
        # Eager attention exports plain MatMul/Softmax that ORT fuses (see _export.export_fp32).
        kwargs = {"attn_implementation": "eager"} if eager else {}
        with quiet_transformers(), _quiet_load_report(folder.layout == "stanford"):
            encoder = AutoModel.from_pretrained(str(folder.transformer_path), **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(f"transformers cannot load {folder.transformer_path}: {exc}") from exc
    layers = [_torch_dense(layer, folder.layout == "stanford") for layer in folder.dense]
    accepts_types = accepts_token_types(encoder)
    normalize = folder.normalize

    class ColbertHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.layers = torch.nn.ModuleList(layers)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if accepts_types:
                kwargs["token_type_ids"] = token_type_ids
            x = self.encoder(**kwargs)[0]
            for layer in self.layers:
                x = layer(x)
            if normalize:
                x = torch.nn.functional.normalize(x, p=2, dim=-1)
            return x

    return ColbertHead().float().eval()


__all__ = ["TorchRunner", "torch_head"]
