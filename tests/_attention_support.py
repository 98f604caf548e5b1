"""Tiny random Llama / Qwen2 models for the attention tests (built from a config, no download)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from vectorstream.attention import register


def _common(vocab: int) -> dict[str, object]:
    return {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # GQA: two query heads per KV head
        "max_position_embeddings": 4096,
    }


def tiny_model(kind: str, *, seed: int = 0, vocab: int = 101) -> torch.nn.Module:
    """A random ``kind`` ("llama" or "qwen2") model in eval mode using the vectorstream attention."""
    name = register()
    torch.manual_seed(seed)
    if kind == "llama":
        model: torch.nn.Module = LlamaForCausalLM(LlamaConfig(**_common(vocab)))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**_common(vocab)))
    else:
        raise ValueError(kind)
    model.set_attn_implementation(name)
    return model.eval()


def random_ids(n: int, *, seed: int = 0, vocab: int = 101) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=gen)
