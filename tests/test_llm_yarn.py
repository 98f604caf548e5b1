"""Serving an LLM beyond its trained length: positions stretched by YaRN at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from _llm_support import smollm2
from vectorstream.attention._llm_load import load_llm
from vectorstream.errors import ConfigError
from vectorstream.server.settings import ServerSettings


def _folder(path: Path, rope: dict[str, object]) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, saved as an HF folder."""
    tokenizer = smollm2().tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters=rope,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_yarn_stretches_the_window_and_sharpens_attention(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", {"rope_type": "default", "rope_theta": 10000.0})
    plain = load_llm(str(folder))
    long = load_llm(str(folder), yarn=4)
    assert plain.window == 512 and long.window == 2048
    rotary = long.model.model.rotary_emb
    assert rotary.attention_scaling > 1.1  # YaRN's temperature: 0.1·ln(4) + 1
    # Low frequencies are interpolated, the highest kept: the rotary table differs from before.
    assert not torch.allclose(rotary.inv_freq, plain.model.model.rotary_emb.inv_freq)
    assert torch.isclose(rotary.inv_freq[0], plain.model.model.rotary_emb.inv_freq[0])
    ids = torch.tensor([list(range(3, 1500))])
    with torch.inference_mode():
        logits = long.model(input_ids=ids).logits
    assert logits.shape[1] == ids.shape[1] and torch.isfinite(logits).all()


def test_bad_yarn_factors_and_scaled_models_are_refused(tmp_path: Path) -> None:
    scaled = _folder(tmp_path / "s", {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ConfigError, match="already scales its positions"):
        load_llm(str(scaled), yarn=2)
    for factor in (1.0, 0.5, float("nan")):
        with pytest.raises(ConfigError, match="YaRN factor"):
            load_llm(str(scaled), yarn=factor)
    with pytest.raises(ConfigError, match="llm_yarn"):
        ServerSettings(llm="smollm2", llm_yarn=1.0)
