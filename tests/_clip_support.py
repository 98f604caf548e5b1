"""A tiny random-weight CLIP folder, the transformers reference, and a corpus of test images.

The folder is what transformers' own ``save_pretrained`` writes for a ``CLIPModel`` and a
``CLIPProcessor``: a CLIP tokenizer built the CLIP way (byte-level BPE with ``</w>`` word ends,
merges trained here on generated text), the processor's default image settings (shortest edge
224, bicubic, centre crop 224, OpenAI mean/std) and tiny towers (2 layers, width 32, patch 32).

Every image is made by the tests or read at run time from an installed package (photos that
matplotlib, scikit-learn and python-docx ship); a package that is missing just drops its photos.
"""

from __future__ import annotations

import importlib.util
import io
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _models_support import varied_texts

IMAGE_SIZE = 224
PATCH = 32


# -- the model folder ---------------------------------------------------------------------------


def _clip_tokenizer() -> Any:
    """A CLIPTokenizer whose vocabulary is every byte (plain and word-final) plus trained merges."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    captions = ["a photo of a cat", "a photo of a dog", "a picture of the river at night"]
    corpus = [*varied_texts(400, seed=3), *captions]
    trainer_tok = Tokenizer(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    # The normaliser and pre-tokeniser CLIP uses, so merges are learned on the same pieces.
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        initial_alphabet=ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    trainer_tok.train_from_iterator(corpus, trainer)
    import json

    merges_raw = json.loads(trainer_tok.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges_raw]
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges)]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def image_processor_class() -> Any:
    """The reference image processor: transformers' Pillow-based CLIP processor.

    transformers 5 names it ``CLIPImageProcessorPil`` (``CLIPImageProcessor`` is the torchvision
    one when torchvision is installed); in transformers 4 ``CLIPImageProcessor`` is Pillow-based.
    """
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a random-weight CLIPModel and its CLIPProcessor into ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    vocab_size = len(tokenizer.get_vocab())
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
        },
        projection_dim=24,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=image_processor_class()(), tokenizer=tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


@dataclass
class Reference:
    """transformers' CLIPModel and processor on a folder: the vectors to match."""

    model: Any
    image_processor: Any
    tokenizer: Any

    @classmethod
    def load(cls, folder: Path) -> Reference:
        from transformers import CLIPModel, CLIPTokenizer

        return cls(
            model=CLIPModel.from_pretrained(str(folder)).eval(),
            image_processor=image_processor_class().from_pretrained(str(folder)),
            tokenizer=CLIPTokenizer.from_pretrained(str(folder)),
        )

    def pixels(self, images: Sequence[Any]) -> np.ndarray:
        return np.asarray(
            self.image_processor(images=list(images), return_tensors="np")["pixel_values"]
        )

    def image_features(self, images: Sequence[Any], batch: int = 16) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(images), batch):
            pixels = torch.from_numpy(self.pixels(images[start : start + batch]))
            with torch.inference_mode():
                out.append(_tensor(self.model.get_image_features(pixel_values=pixels)).numpy())
        return np.concatenate(out)

    def text_features(self, texts: Sequence[str], batch: int = 32) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), batch):
            enc = self.tokenizer(
                list(texts[start : start + batch]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                out.append(_tensor(self.model.get_text_features(**enc)).numpy())
        return np.concatenate(out)


def _tensor(out: Any) -> Any:
    return out if hasattr(out, "shape") else out.pooler_output


# -- images -------------------------------------------------------------------------------------


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """An (H, W, 3) uint8 picture: a colour gradient, a few discs and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fx, fy = x / max(width - 1, 1), y / max(height - 1, 1)
    a, b, c = rng.uniform(0, 255, 3)
    img = np.stack([a * fx + (255 - a) * fy, b * fy, c * (1 - fx)], axis=-1)
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.1, 0.5) * max(width, height)
        inside = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def reference_open(source: Any) -> Any:
    """What the processor is given for a file: Pillow's first frame, EXIF orientation applied."""
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    image = Image.open(io.BytesIO(data))  # from memory: no file handle left open
    image.seek(0)
    image.load()
    return ImageOps.exif_transpose(image)


@dataclass(frozen=True)
class ImageCase:
    name: str
    source: Any  # what ClipModel.embed_images is given (path, bytes or PIL image)

    def reference(self) -> Any:
        return reference_open(self.source)


def _exif_orientation(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _installed_photos() -> list[tuple[str, Path]]:
    """Photos and pictures that installed packages ship."""
    found = []
    wanted = {
        "matplotlib": [
            "mpl-data/sample_data/grace_hopper.jpg",
            "mpl-data/sample_data/logo2.png",
            "mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
        ],
        "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
        "docx": ["templates/default-docx-template/docProps/thumbnail.jpeg"],
    }
    for package, names in wanted.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        root = Path(spec.origin).parent
        found += [(f"{package}:{Path(n).name}", root / n) for n in names if (root / n).is_file()]
    return found


def write_image_cases(directory: Path) -> list[ImageCase]:
    """Images of every size, mode, format and input kind the tests check, written to ``directory``."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    cases: list[ImageCase] = []
    seed = iter(range(10_000))

    def save(name: str, image: Any, **kwargs: Any) -> Path:
        path = directory / name
        image.save(path, **kwargs)
        cases.append(ImageCase(name, str(path)))
        return path

    # Sizes: 1x1 to large, thin strips, just off the crop size, both orientations.
    sizes = [
        (1, 1),
        (1, 7),
        (7, 1),
        (2, 3),
        (31, 17),
        (224, 224),
        (225, 223),
        (223, 225),
        (640, 480),
        (480, 640),
        (1000, 30),
        (30, 1000),
        (3000, 2000),
    ]
    for w, h in sizes:
        save(f"size-{w}x{h}.png", Image.fromarray(picture(w, h, next(seed))))
    rgb = Image.fromarray(picture(300, 200, next(seed)))
    # Modes, each saved in a format that keeps it.
    alpha = Image.fromarray(np.linspace(0, 255, 300 * 200).reshape(200, 300).astype(np.uint8))
    save("mode-L.png", rgb.convert("L"))
    save("mode-LA.png", Image.merge("LA", (rgb.convert("L"), alpha)))
    save("mode-RGBA.png", Image.merge("RGBA", (*rgb.split(), alpha)))
    save("mode-P.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    save(
        "mode-P-transparent.png",
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32),
        transparency=3,
    )
    save("mode-1.png", rgb.convert("1"))
    deep = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("mode-I16.png", Image.fromarray(deep))
    save("mode-I.tiff", Image.fromarray(deep.astype(np.int32) // 300))
    save("mode-F.tiff", Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32)))
    # Formats.
    photo = Image.fromarray(picture(400, 300, next(seed)))
    save("format.jpg", photo, quality=90)
    save("format-L.jpg", photo.convert("L"), quality=90)
    save("format-cmyk.jpg", photo.convert("CMYK"), quality=90)
    save("format.gif", photo.convert("P", palette=Image.Palette.ADAPTIVE))
    save(
        "format-transparent.gif", photo.convert("P", palette=Image.Palette.ADAPTIVE), transparency=0
    )
    save("format.webp", photo, quality=80)
    save(
        "format-rgba.webp", Image.merge("RGBA", (*photo.split(), photo.convert("L"))), lossless=True
    )
    save("format.bmp", photo)
    save("format.tiff", photo)
    # EXIF orientations 2..8 on a non-square photo (a rotation changes the crop).
    for orientation in range(2, 9):
        save(f"exif-{orientation}.jpg", photo, quality=92, exif=_exif_orientation(orientation))
    # Animated: the first frame counts.
    for name, kwargs in (("anim.gif", {}), ("anim.webp", {"lossless": True}), ("anim.png", {})):
        frames = [Image.fromarray(picture(160, 120, next(seed))) for _ in range(3)]
        if name.endswith(".gif"):
            frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
        save(
            name, frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs
        )
    # Input kinds: bytes, pathlib.Path, in-memory PIL images (RGB, RGBA, EXIF-rotated).
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    cases.append(ImageCase("bytes-jpeg", buffer.getvalue()))
    cases.append(ImageCase("pathlib", Path(save("as-path.png", rgb))))
    cases.append(ImageCase("pil-rgb", Image.fromarray(picture(333, 222, next(seed)))))
    cases.append(ImageCase("pil-rgba", Image.merge("RGBA", (*rgb.split(), alpha))))
    rotated = io.BytesIO()
    photo.save(rotated, format="JPEG", exif=_exif_orientation(6))
    cases.append(ImageCase("pil-exif-6", Image.open(io.BytesIO(rotated.getvalue()))))
    # A PNG under a misleading name: content decides, not the suffix.
    save("disguised.txt", Image.fromarray(picture(90, 70, next(seed))), format="PNG")
    # Photos from installed packages.
    for name, path in _installed_photos():
        cases.append(ImageCase(name, str(path)))
    # Random sizes and modes for breadth.
    rng = random.Random(5)
    for i in range(20):
        w, h = rng.randint(1, 700), rng.randint(1, 700)
        image = Image.fromarray(picture(w, h, next(seed)))
        mode = rng.choice(["RGB", "L", "RGBA", "P", "CMYK"])
        image = image if mode == "RGB" else image.convert(mode)
        fmt = "jpg" if mode in ("RGB", "L", "CMYK") and i % 2 else "png"
        if mode == "CMYK" and fmt == "png":
            fmt = "tiff"
        save(f"random-{i}-{mode}.{fmt}", image)
    return cases


# -- bad inputs ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 1, **kwargs: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture(width, height, seed)).save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def clip_texts() -> list[str]:
    """240 varied texts (empty to far over 77 tokens, unicode, code) plus caption-like ones."""
    captions = [f"a photo of {w}" for w in ("a cat", "two dogs", "the harbour at night", "")]
    return varied_texts(236, seed=11) + captions


__all__ = [
    "IMAGE_SIZE",
    "ImageCase",
    "Reference",
    "build_tiny_clip",
    "clip_texts",
    "cosines",
    "image_processor_class",
    "jpeg_bytes",
    "picture",
    "png_claiming",
    "reference_open",
    "write_image_cases",
]
