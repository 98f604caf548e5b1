"""CLIP: images and texts embedded into one vector space (model kind "image").

    image folder ─▶ detect_image ─▶ load_image ─▶ ClipModel
        .embed_images([path | bytes | PIL image, ...])  ─▶ image tower ─▶ (n, dim)
        .embed(["a photo of a cat", ...])               ─▶ text tower  ─▶ (n, dim)

A HuggingFace ``CLIPModel`` folder (``config.json`` with ``model_type: clip``, weights,
``tokenizer.json`` and the image processor's configuration), or a sentence-transformers folder
whose ``modules.json`` names a ``CLIPModel`` module. The two towers run as two ONNX graphs, each
ending in its projection (image: ``pixel_values`` → image embeddings; text: ``input_ids`` +
``attention_mask`` → text embeddings), exported once into the cache; a folder that ships
``onnx/vision_model.onnx`` and ``onnx/text_model.onnx`` (the transformers.js layout) runs those.
The torch backend runs transformers' ``CLIPModel.get_image_features`` / ``get_text_features``.

Images are decoded and preprocessed by :mod:`._images` (the processor's own numerics) in bounded
batches, so memory depends on the batch size, never on the number of images. Texts are tokenised,
truncated to the text tower's positions (77 for CLIP) and batched by token budget like the dense
:class:`~vectorstream.models.Embedder`, whose pipeline protocol (``tokenize`` /
``embed_tokenized`` returning dense arrays) the text side follows, so text chunks go through the
pipeline and search queries embed into the images' space.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError, MissingDependencyError, ModelError, ParseError
from ._backends import onnx_session, quiet_transformers, torch_available
from ._checkset import check_texts
from ._embedder import DEFAULT_TOKEN_BUDGET, _load_tokenizer, pad_batch, token_budget_batches
from ._export import _temp_path, export_dir, export_graph, export_lock, quantize_int8
from ._folder import files_identity
from ._gate import GateReport, cosine_rows
from ._images import ImageInput, ImageSettings, load_pixels, read_image_settings
from ._pooling import l2_normalize
from ._threads import available_cores

log = logging.getLogger("vectorstream.models.image")

IMAGE_GRAPH = "image.onnx"
TEXT_GRAPH = "text.onnx"
IMAGE_INT8 = "image.int8.onnx"
TEXT_INT8 = "text.int8.onnx"
CLIP_GATE = "clip-int8-gate.json"
# Graphs a folder may ship: the transformers.js / Optimum per-tower layout.
_SHIPPED_IMAGE = "onnx/vision_model.onnx"
_SHIPPED_TEXT = "onnx/text_model.onnx"
DEFAULT_IMAGE_BATCH = 16  # images decoded and run together: bounds memory, not throughput
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_MAX_JSON = 4 << 20  # detect_image reads only small files: a config is a few kilobytes


# -- the folder ---------------------------------------------------------------------------------


def _small_json(path: Path) -> Any:
    """A small JSON file's content, or None (missing, too big, unreadable): never raises."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_JSON:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_clip_config(config: Any) -> bool:
    if not isinstance(config, dict):
        return False
    architectures = config.get("architectures")
    names = architectures if isinstance(architectures, list) else []
    return config.get("model_type") == "clip" or "CLIPModel" in names


def _clip_dir(path: Path) -> Path | None:
    """The CLIP model folder inside ``path``: itself, or the sentence-transformers CLIP module."""
    if _is_clip_config(_small_json(path / "config.json")):
        return path
    modules = _small_json(path / "modules.json")
    if isinstance(modules, list):
        for module in modules:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("CLIPModel"):
                sub = path / str(module.get("path", ""))
                if _is_clip_config(_small_json(sub / "config.json")):
                    return sub
    return None


def detect_image(path: Path) -> bool:
    """Whether ``path`` holds a CLIP model (its ``config.json`` or ``modules.json`` says so)."""
    try:
        return _clip_dir(Path(path)) is not None
    except (OSError, ValueError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class ClipFolder:
    """What a CLIP folder says: sizes, tokenizer, image preprocessing, shipped graphs."""

    path: Path  # the folder with config.json, weights, tokenizer and processor configs
    image_settings: ImageSettings
    image_size: int  # the vision tower's input: image_size x image_size pixels
    dim: int  # projection width, shared by both towers
    max_tokens: int  # text positions, special tokens included
    tokenizer_path: Path
    pad_token: str | None
    weights_path: Path | None
    onnx_image: Path | None
    onnx_text: Path | None

    def identity_files(self) -> list[Path]:
        files = [self.weights_path] if self.weights_path is not None else []
        files += [g for g in (self.onnx_image, self.onnx_text) if g is not None]
        names = (
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            "processor_config.json",
        )
        return files + [self.path / n for n in names]


def _token_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def read_clip_folder(path: Path) -> ClipFolder:
    """Parse a CLIP folder; raise ``ModelError`` naming what is missing or unsupported."""
    root = _clip_dir(path)
    if root is None:
        raise ModelError(f"{path} is not a CLIP model folder (its config.json says otherwise)")
    config = _small_json(root / "config.json")
    assert isinstance(config, dict)  # _clip_dir checked it
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or {}
    tokenizer_path = root / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"CLIP folder {root} has no tokenizer.json; only fast-tokenizer folders are supported"
        )
    settings = read_image_settings(root)
    image_size = int(vision.get("image_size", 224))
    if settings.output_size != (image_size, image_size):
        raise ModelError(
            f"{root}: the image processor makes {settings.output_size} images but the vision "
            f"tower takes {image_size}x{image_size}"
        )
    tok_config = _small_json(root / "tokenizer_config.json") or {}
    limits = [text.get("max_position_embeddings", 77), tok_config.get("model_max_length")]
    max_tokens = min(v for v in limits if isinstance(v, int) and 0 < v < 1_000_000)
    pad = _token_name(tok_config.get("pad_token")) or _token_name(tok_config.get("eos_token"))
    weights = next((root / n for n in _WEIGHT_FILES if (root / n).is_file()), None)
    onnx_image, onnx_text = root / _SHIPPED_IMAGE, root / _SHIPPED_TEXT
    shipped = onnx_image.is_file() and onnx_text.is_file()
    return ClipFolder(
        path=root,
        image_settings=settings,
        image_size=image_size,
        dim=int(config.get("projection_dim", 512)),
        max_tokens=max_tokens,
        tokenizer_path=tokenizer_path,
        pad_token=pad,
        weights_path=weights,
        onnx_image=onnx_image if shipped else None,
        onnx_text=onnx_text if shipped else None,
    )


# -- the towers ---------------------------------------------------------------------------------


def _features(out: Any) -> Any:
    # transformers 4 returns the projected tensor; 5 returns an output whose pooler_output it is.
    return out if hasattr(out, "shape") else out.pooler_output


class _OnnxTowers:
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


def _load_clip(path: Path, **kwargs: Any) -> Any:
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


class _TorchTowers:
    """transformers' CLIPModel under ``torch.inference_mode``; CUDA when available."""

    name = "torch"

    def __init__(self, path: Path, threads: int | None) -> None:
        import torch

        self._torch = torch
        if threads and threads > 0:
            torch.set_num_threads(threads)  # process-wide: only when asked for
        self.threads = threads
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = _load_clip(path).to(self.device)

    def _run(self, method: str, **inputs: np.ndarray) -> np.ndarray:
        torch = self._torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        try:
            with torch.inference_mode():
                out = _features(getattr(self._model, method)(**tensors))
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run("get_image_features", pixel_values=pixel_values)

    def texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._run("get_text_features", input_ids=input_ids, attention_mask=attention_mask)


# -- export and int8 ----------------------------------------------------------------------------


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
        model = _load_clip(folder.path, attn_implementation="eager")

        class _ImageTower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.clip = model

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                return _features(self.clip.get_image_features(pixel_values=pixel_values))

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
                return _features(out)

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


def gate_images(n: int = 24, seed: int = 11) -> list[Any]:
    """Generated test pictures for the int8 gate: gradients, shapes, stripes, noise, sizes."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:
        raise MissingDependencyError("pillow", "image") from exc

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        width, height = int(rng.integers(24, 400)), int(rng.integers(24, 400))
        kind = i % 4
        if kind == 0:
            y, x = np.mgrid[0:height, 0:width]
            base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1)], -1)
            pixels = np.concatenate([base, (base.sum(-1, keepdims=True) // 2)], -1)
            image = Image.fromarray(pixels.astype(np.uint8))
        elif kind == 1:
            image = Image.new(
                "RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3))
            )
            draw = ImageDraw.Draw(image)
            for _ in range(6):
                x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
                x1, y1 = x0 + int(rng.integers(4, width)), y0 + int(rng.integers(4, height))
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 2:
            period = int(rng.integers(2, 24))
            stripes = ((np.arange(width) // period) % 2 * 255).astype(np.uint8)
            image = Image.fromarray(np.tile(stripes, (height, 1))).convert("RGB")
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        images.append(image)
    return images


def _measure(fp32: _OnnxTowers, int8: _OnnxTowers, model: ClipModel) -> GateReport:
    texts = check_texts()
    pixels = model.preprocess(gate_images())
    encodings = model._encoder.encode_batch(texts)  # not tokenize(): no truncation warnings
    ids, mask, _ = pad_batch(encodings, range(len(encodings)), model._pad_id)
    text_cos = cosine_rows(fp32.texts(ids, mask), int8.texts(ids, mask))
    image_cos = cosine_rows(fp32.images(pixels), int8.images(pixels))
    cos = np.concatenate([text_cos, image_cos])
    return GateReport(float(cos.mean()), float(cos.min()), len(cos))


def _ensure_int8(
    model: ClipModel, fp32: tuple[Path, Path], directory: Path, threads: int | None
) -> tuple[Path, Path, GateReport]:
    """Both towers quantised, kept only when they pass the int8 gate over texts and images."""
    targets = (directory / IMAGE_INT8, directory / TEXT_INT8)
    report_path = directory / CLIP_GATE

    def ready() -> GateReport | None:
        if not all(t.is_file() for t in targets) or not report_path.is_file():
            return None
        try:
            return GateReport(**json.loads(report_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    report = ready()
    if report is not None:
        return targets[0], targets[1], report
    try:
        with export_lock(directory):
            report = ready()
            if report is not None:
                return targets[0], targets[1], report
            log.warning("quantising CLIP %s to int8 and checking accuracy", model.model_id)
            candidates = [_temp_path(directory, ".int8.onnx") for _ in targets]
            try:
                for source, candidate in zip(fp32, candidates, strict=True):
                    quantize_int8(source, candidate)
                report = _measure(
                    _OnnxTowers(*fp32, threads),
                    _OnnxTowers(candidates[0], candidates[1], threads),
                    model,
                )
                log.warning("CLIP %s", report.describe())
                if not report.passed:
                    raise ModelError(
                        f"int8 export of {model.model_id} refused: {report.describe()} "
                        "(over texts and images); use the fp32 model"
                    )
                for candidate, target in zip(candidates, targets, strict=True):
                    os.replace(candidate, target)
                tmp_report = _temp_path(directory, ".json")
                tmp_report.write_text(json.dumps(asdict(report), indent=2))
                os.replace(tmp_report, report_path)
            finally:
                for candidate in candidates:
                    candidate.unlink(missing_ok=True)
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelError(f"cannot write the int8 CLIP graphs into {directory}: {exc}") from exc
    return targets[0], targets[1], report


# -- the model ----------------------------------------------------------------------------------


class ClipModel:
    """A loaded CLIP model: ``embed_images`` and ``embed`` (texts) into one space.

    Safe to call from several threads at once. Build it with ``load_model(spec, kind="image")``.
    """

    kind = "image"

    def __init__(
        self,
        *,
        model_id: str,
        folder: ClipFolder,
        towers: _OnnxTowers | _TorchTowers,
        identity: str,
        quantized: bool = False,
        normalize: bool = True,
        batch_size: int = DEFAULT_IMAGE_BATCH,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self.towers = towers
        self.backend: str = towers.name
        self.quantized = quantized
        self.normalize = normalize
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.dim: int = folder.dim
        self.max_tokens: int = folder.max_tokens
        self.image_size: tuple[int, int] = (folder.image_size, folder.image_size)
        self.image_settings = folder.image_settings
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind=image;quantized={int(quantized)};dim={self.dim}"
            f";normalize={int(normalize)}"
        )
        self.tokenizer_path: Path = folder.tokenizer_path
        base = _load_tokenizer(folder.tokenizer_path)
        base.no_padding()
        base.no_truncation()
        self.tokenizer: tokenizers.Tokenizer = base
        self._encoder = _load_tokenizer(folder.tokenizer_path)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens)
        self.num_special_tokens: int = base.num_special_tokens_to_add(False)
        pad_id = base.token_to_id(folder.pad_token) if folder.pad_token else None
        # CLIP pools the first end-of-text token and attends causally, so padding after it
        # never changes a vector; its id only has to be a valid token.
        self._pad_id: int = pad_id if pad_id is not None else 0
        self._lock = threading.Lock()
        self.truncated_inputs = 0
        self.embedded_inputs = 0
        self.embedded_images = 0

    @property
    def threads(self) -> int | None:
        return self.towers.threads

    def __repr__(self) -> str:
        return (
            f"ClipModel({self.model_id!r}, kind='image', backend={self.backend!r}, dim={self.dim}, "
            f"image_size={self.image_size[0]}x{self.image_size[1]}, max_tokens={self.max_tokens}, "
            f"quantized={self.quantized})"
        )

    # -- texts ----------------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Sequence[object]) -> list[str]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return list(texts)  # type: ignore[arg-type]

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Encode for the text tower: special tokens added, truncated to ``max_tokens``."""
        items = self._check_texts(texts)
        if not items:
            return []
        encodings = self._encoder.encode_batch(items)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            with self._lock:
                self.truncated_inputs += truncated
                total = self.truncated_inputs
            log.warning(
                "%d of %d texts exceed %d tokens and were truncated (%d since load)",
                truncated,
                len(items),
                self.max_tokens,
                total,
            )
        return encodings

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens and without truncation."""
        items = self._check_texts(texts)
        if not items:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(items, add_special_tokens=False)]

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Text vectors for encodings from :meth:`tokenize`: (n, dim), input order."""
        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than max_tokens={self.max_tokens}; "
                    "build encodings with tokenize(), which truncates"
                )
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, _ = pad_batch(encodings, batch, self._pad_id)
            out[batch] = self.towers.texts(ids, mask)
        with self._lock:
            self.embedded_inputs += len(encodings)
        return self._finish(out)

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Text vectors (the text tower): (n, dim), in the images' space, input order."""
        if isinstance(texts, str):
            raise TypeError(
                "embed() takes an iterable of strings, not one string; wrap it in a list"
            )
        return self.embed_tokenized(self.tokenize(list(texts)))

    def embed_queries(self, texts: Iterable[str]) -> np.ndarray:
        """Search queries: the same text tower (CLIP has no query markers)."""
        return self.embed(texts)

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Decode and preprocess: float32 (n, 3, H, W). A bad image raises ``ParseError`` with its
        position. Runs without the model, so it may happen in another thread or process."""
        return self._pixels(images, 0)

    def _pixels(self, images: Sequence[ImageInput], offset: int) -> np.ndarray:
        height, width = self.image_size
        out = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, source in enumerate(images):
            try:
                out[i] = load_pixels(source, self.image_settings)
            except ParseError as exc:
                raise ParseError(f"image {offset + i}: {exc}") from exc
        return out

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """Image vectors for :meth:`preprocess` output: (n, dim), in bounded batches."""
        expected = (3, *self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (n, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {pixel_values.shape}"
            )
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            out[start : start + self.batch_size] = self.towers.images(
                pixels[start : start + self.batch_size]
            )
        with self._lock:
            self.embedded_images += len(pixels)
        return self._finish(out)

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Image vectors for paths, encoded bytes or PIL images: (n, dim), input order.

        Images are decoded ``batch_size`` at a time, so memory stays bounded however many are
        given. A bad image raises ``ParseError`` naming its position and source.
        """
        if isinstance(images, str | bytes | bytearray | os.PathLike):
            raise TypeError("embed_images() takes a sequence of images, not one; wrap it in a list")
        items = list(images)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            pixels = self._pixels(chunk, start)
            out[start : start + len(chunk)] = self.towers.images(pixels)
        with self._lock:
            self.embedded_images += len(items)
        return self._finish(out)

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if self.normalize and len(vectors) else vectors


# -- loading ------------------------------------------------------------------------------------


def _graphs(
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


def load_image(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    normalize: bool = True,
    batch_size: int = DEFAULT_IMAGE_BATCH,
    **unknown: object,
) -> ClipModel:
    """Load a CLIP folder as a :class:`ClipModel`.

    ``backend``: "onnx", "torch" or None (ONNX whenever graphs exist or torch can export them).
    ``quantized``: int8 graphs for both towers, kept only if they pass the int8 gate over the
    check texts and generated images. ``normalize``: unit-length vectors (cosine = dot product).
    ``batch_size``: images decoded and run together (bounds memory).
    """
    if unknown:
        raise ConfigError(
            f"unknown option(s) {sorted(unknown)} for an image model (it takes: normalize, "
            "batch_size)"
        )
    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graphs; it needs backend 'onnx'")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    folder = read_clip_folder(Path(path))
    identity = files_identity(folder.identity_files(), (folder.max_tokens, folder.dim))

    def build(towers: _OnnxTowers | _TorchTowers) -> ClipModel:
        return ClipModel(
            model_id=model_id,
            folder=folder,
            towers=towers,
            identity=identity,
            quantized=quantized,
            normalize=normalize,
            batch_size=batch_size,
        )

    if backend == "torch":
        return build(_TorchTowers(folder.path, threads))
    can_export = torch_available() and folder.weights_path is not None
    try:
        graphs = _graphs(folder, model_id, identity, cache, export=can_export)
    except ModelError as exc:
        if backend == "onnx" or quantized:
            raise
        log.warning("CLIP ONNX export failed (%s); using the torch backend", exc)
        graphs = None
    if graphs is None:
        if backend == "onnx" or quantized or not torch_available():
            raise ModelError(
                f"{model_id} has no ONNX graphs (looked in {folder.path / 'onnx'} and "
                f"{export_dir(cache, model_id, identity)}) and torch is not installed to export "
                "them: pip install 'vectorstream[torch]'"
            )
        return build(_TorchTowers(folder.path, threads))
    fp32 = _OnnxTowers(*graphs, threads)
    if not quantized:
        return build(fp32)
    model = build(fp32)  # the fp32 model measures the int8 graphs against itself
    image_int8, text_int8, report = _ensure_int8(
        model, graphs, export_dir(cache, model_id, identity), threads
    )
    log.info("CLIP %s", report.describe())
    return build(_OnnxTowers(image_int8, text_int8, threads))


__all__ = [
    "DEFAULT_IMAGE_BATCH",
    "ClipFolder",
    "ClipModel",
    "detect_image",
    "export_towers",
    "gate_images",
    "load_image",
    "read_clip_folder",
]
