"""CLIP's towers as two ONNX graphs, each ending in its projection (image: ``pixel_values`` →
image embeddings; text: ``input_ids`` + ``attention_mask`` → text embeddings).

The graphs are the folder's own (``onnx/vision_model.onnx`` and ``onnx/text_model.onnx``, the
transformers.js layout) or exported once into the cache from the torch weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._backends import onnx_session
from ._clip_folder import ClipFolder
from ._clip_torch import features, load_clip
from ._export import export_dir, export_graph, export_lock
from ._threads import available_cores

log = logging.getLogger("vectorstream.models.image")

IMAGE_GRAPH = "image.onnx"
TEXT_GRAPH = "text.onnx"


class OnnxTowers:
    """The two graphs on ONNX Runtime sessions (thread-safe: ``run`` holds no per-call state)."""

    name = "onnx"

    def __init__(self, image_graph: Path, text_graph: Path, threads: int | None) -> None:
        self.threads = threads if threads and threads > 0 else available_cores()
        self.graphs = (image_graph, text_graph)
        self._image = onnx_session(image_graph, self.threads)
        self._text = onnx_session(text_graph, self.threads)
        image_inputs = {i.name for i in self._image.get_inputs()}
        self._text_inputs = {i.name for i in self._text.get_inputs()}
        if "pixel_values" not in image_inputs or "input_ids" not in self._text_inputs:
            raise ModelError(
                f"CLIP graphs {image_graph.name} / {text_graph.name} lack pixel_values / input_ids"
            )
        self._image_out = self._embeds_output(self._image, "image_embeds", image_graph)
        self._text_out = self._embeds_output(self._text, "text_embeds", text_graph)

    @staticmethod
    def _embeds_output(session: Any, preferred: str, path: Path) -> str:
        outputs = session.get_outputs()
        for output in outputs:
            if output.name == preferred:
                return str(output.name)
        for output in outputs:
            if len(output.shape) == 2:
                return str(output.name)
        raise ModelError(f"ONNX graph {path} has no (batch, dim) embeddings output")

    def images(self, pixel_values: np.ndarray) -> np.ndarray:
        try:
            (out,) = self._image.run([self._image_out], {"pixel_values": pixel_values})
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.graphs[0]}: {exc}") from exc
        return np.asarray(out, dtype=np.float32)

    def texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids}
        if "attention_mask" in self._text_inputs:
            feed["attention_mask"] = attention_mask
        try:
            (out,) = self._text.run([self._text_out], feed)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.graphs[1]}: {exc}") from exc
        return np.asarray(out, dtype=np.float32)


def export_towers(folder: ClipFolder, directory: Path) -> tuple[Path, Path]:
    """Export both towers (each with its projection) into ``directory`` unless already there."""
    image_target, text_target = directory / IMAGE_GRAPH, directory / TEXT_GRAPH
    if image_target.is_file() and text_target.is_file():
        return image_target, text_target
    with export_lock(directory):
        if image_target.is_file() and text_target.is_file():  # another process exported
            return image_target, text_target
        try:
            import torch
        except ImportError as exc:
            raise MissingDependencyError("torch", "torch") from exc

        log.warning(
            "exporting CLIP %s to ONNX in %s (once; later loads reuse it)", folder.path, directory
        )
        # Eager attention: plain MatMul/Softmax that ONNX Runtime fuses (see _export).
        model = load_clip(folder.path, attn_implementation="eager")

        class _ImageTower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.clip = model

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                return features(self.clip.get_image_features(pixel_values=pixel_values))

        class _TextTower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.clip = model

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> torch.Tensor:
                out = self.clip.get_text_features(
                    input_ids=input_ids, attention_mask=attention_mask
                )
                return features(out)

        side = folder.image_size
        pixels = torch.zeros((2, 3, side, side), dtype=torch.float32)
        # Token ids: the end-of-text id is whatever the config says, so the dummy holds plain
        # ids; the second row is padded so the traced graph keeps the padding mask.
        ids = torch.ones((2, 8), dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0
        batch = {0: "batch"}
        tokens = {0: "batch", 1: "sequence"}
        try:
            if not image_target.is_file():
                export_graph(
                    _ImageTower(),
                    (pixels,),
                    image_target,
                    input_names=["pixel_values"],
                    output_names=["image_embeds"],
                    dynamic_axes={"pixel_values": batch, "image_embeds": batch},
                )
            export_graph(
                _TextTower(),
                (ids, mask),
                text_target,
                input_names=["input_ids", "attention_mask"],
                output_names=["text_embeds"],
                dynamic_axes={"input_ids": tokens, "attention_mask": tokens, "text_embeds": batch},
            )
        except ModelError as exc:
            raise ModelError(f"ONNX export of CLIP {folder.path} failed: {exc}") from exc
    return image_target, text_target


def tower_graphs(
    folder: ClipFolder, model_id: str, identity: str, cache: Path, *, export: bool
) -> tuple[Path, Path] | None:
    """The fp32 tower graphs: the folder's own, ones exported earlier, or (``export``) new ones."""
    if folder.onnx_image is not None and folder.onnx_text is not None:
        return folder.onnx_image, folder.onnx_text
    directory = export_dir(cache, model_id, identity)
    cached = (directory / IMAGE_GRAPH, directory / TEXT_GRAPH)
    if all(p.is_file() for p in cached):
        return cached
    if not export:
        return None
    try:
        return export_towers(folder, directory)
    except OSError as exc:
        raise ModelError(f"cannot export CLIP {model_id} into {directory}: {exc}") from exc


__all__ = ["IMAGE_GRAPH", "TEXT_GRAPH", "OnnxTowers", "export_towers", "tower_graphs"]
