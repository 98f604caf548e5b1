"""The compiled scan over a stored context's int8 sketch: the float32 scan's keys, pages given back."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from _attention_support import random_ids, tiny_model
from vectorstream.attention import ContextDB, Session, SparseConfig, forward
from vectorstream.attention._layers import BufferedLayer
from vectorstream.attention._mapped import SKETCH_FILE
from vectorstream.attention._stream_scan import AVAILABLE, KeySketch, quantize_keys, stream_scan

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")

SPARSE = SparseConfig(alpha=1e-2, full_below=0, n_init=4, n_last=32, sketch_min=0)


def test_quantized_rows_stay_within_half_a_step() -> None:
    rng = np.random.default_rng(1)
    keys = (rng.standard_normal((2, 300, 16)) * np.linspace(0.1, 9, 16)).astype(np.float32)
    keys[0, 7] = 0.0  # an all-zero key has scale 0 and codes 0
    codes, scales = quantize_keys(keys)
    assert codes.dtype == np.int8 and scales.shape == (2, 300)
    assert np.abs(codes).max() <= 127 and scales[0, 7] == 0 and not codes[0, 7].any()
    err = np.abs(codes * scales[..., None] - keys)
    assert (err <= 0.5 * scales[..., None] * (1 + 1e-6) + 1e-12).all()


@pytest.mark.parametrize(("alpha", "spread"), [(1e-3, 3.0), (1e-2, 1.0), (0.0, 2.0), (1.0, 4.0)])
def test_the_scan_keeps_exactly_the_keys_of_exact_dipr(alpha: float, spread: float) -> None:
    rng = np.random.default_rng(7)
    h, g, n, d = 3, 3, 5000, 64
    keys = (rng.standard_normal((h, n, d)) * np.linspace(0.3, 2.5, d)).astype(np.float32)
    values = rng.standard_normal((h, n, d)).astype(np.float32)
    q = torch.from_numpy((rng.standard_normal((h, g, d)) * spread).astype(np.float32))
    scaling = d**-0.5
    beta = math.inf if alpha == 0 else -math.log(alpha) / scaling
    lo, hi = 4, n - 100
    k_win = torch.from_numpy(np.concatenate([keys[:, :lo], keys[:, hi:]], axis=1))
    v_win = torch.from_numpy(np.concatenate([values[:, :lo], values[:, hi:]], axis=1))
    sketch = KeySketch(*quantize_keys(keys))
    res = stream_scan(q, sketch, keys, values, lo, hi, k_win, v_win, beta, scaling)

    best = (q @ k_win.transpose(1, 2)).amax(-1)
    raw = q @ torch.from_numpy(keys[:, lo:hi]).transpose(1, 2)
    top = torch.maximum(best, raw.amax(-1))
    keep = raw >= (top - beta).unsqueeze(-1)
    assert list(res.selected) == keep.sum(-1).reshape(-1).tolist()
    assert all(r >= s for r, s in zip(res.exact, res.selected, strict=True))
    # The window always counts; the middle only where DIPR keeps a key.
    logits = torch.cat([q @ k_win.transpose(1, 2), raw.masked_fill(~keep, float("-inf"))], -1)
    every_value = torch.cat([v_win, torch.from_numpy(values[:, lo:hi])], 1)
    want = torch.softmax(logits * scaling, -1) @ every_value
    assert torch.allclose(res.out, want, atol=1e-5)
    if alpha == 1e-3 and spread == 3.0:
        # Sharp attention: the sketch rules out most keys without reading them exactly.
        assert max(res.exact) < 0.2 * (hi - lo)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama")


def _file_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = len(head) > 5 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def _store(
    model: torch.nn.Module, folder: Path, n_tokens: int, stored: int, seed: int
) -> tuple[ContextDB, Path, list[int]]:
    """``stored`` random tokens prefilled exactly and stored: (the db, the context's folder, ids)."""
    ids = random_ids(n_tokens, seed=seed)[0].tolist()
    session = Session(SparseConfig(mode="full"))
    with torch.inference_mode():
        forward(model, torch.tensor([ids[:stored]]), session)
    session.token_ids = ids[:stored]
    db = ContextDB(folder)
    return db, folder / db.store(session, build_index=False), ids


def test_decoding_a_stored_context_gives_its_pages_back(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    db, folder, ids = _store(model, tmp_path, 2300, 2200, seed=3)
    assert (folder / SKETCH_FILE).exists()  # written with every float32 context

    mapped, _ = db.create_session(ids[:2201], SPARSE)
    assert all(isinstance(x, BufferedLayer) and x.stored is not None for x in mapped.layers)
    kv_file = (folder / "kv.safetensors").resolve()
    with torch.inference_mode():
        for token in ids[2200:2220]:
            forward(model, torch.tensor([[token]]), mapped)
    size_kib = kv_file.stat().st_size // 1024
    # Every layer's pages go back after its step; only a page at a layer's edge may stay.
    assert _file_rss_kib(kv_file) <= max(16, size_kib // 20), (_file_rss_kib(kv_file), size_kib)
    assert all(s.layers[0].mode == "flat" for s in mapped.stats)
    # Where memory allows, the pages can stay (no re-reading at every step).
    kept, _ = db.create_session(ids[:2201], dataclasses.replace(SPARSE, release_pages=False))
    with torch.inference_mode():
        for token in ids[2200:2205]:
            forward(model, torch.tensor([[token]]), kept)
    assert _file_rss_kib(kv_file) > size_kib // 4


def test_a_context_stored_without_a_sketch_gets_one_and_decodes_the_same(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    db, folder, ids = _store(model, tmp_path, 460, 400, seed=9)
    first, _ = db.create_session(ids[:401], SPARSE)
    (folder / SKETCH_FILE).unlink()  # as written before sketches existed
    second, _ = db.create_session(ids[:401], SPARSE)
    assert (folder / SKETCH_FILE).exists()
    with torch.inference_mode():
        for token in ids[400:420]:
            a = forward(model, torch.tensor([[token]]), first).logits
            b = forward(model, torch.tensor([[token]]), second).logits
            assert torch.equal(a, b)


def test_a_resident_budget_keeps_the_first_layers_sketches_mapped(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    db, folder, ids = _store(model, tmp_path, 2300, 2200, seed=5)
    sketch_file = (folder / SKETCH_FILE).resolve()

    read, _ = db.create_session(ids[:2201], SPARSE)
    layer0 = read.layers[0]
    assert isinstance(layer0, BufferedLayer) and layer0.stored is not None
    one_layer = layer0.stored.sketch.codes.nbytes + layer0.stored.sketch.scales.nbytes
    pinned, _ = db.create_session(
        ids[:2201], dataclasses.replace(SPARSE, sketch_resident_bytes=one_layer)
    )
    with torch.inference_mode():
        for token in ids[2200:2210]:
            a = forward(model, torch.tensor([[token]]), read).logits
            b = forward(model, torch.tensor([[token]]), pinned).logits
            assert torch.equal(a, b)
    # Read sketches map no page; the budget keeps layer 0's mapped (and only it).
    resident_kib = _file_rss_kib(sketch_file)
    assert one_layer // 1024 // 2 <= resident_kib <= one_layer // 1024 + 64, (
        resident_kib,
        one_layer,
    )
