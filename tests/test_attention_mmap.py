"""Memory-mapped contexts and the sketch scan: same numbers as in memory, GQA sharing exact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from _attention_support import random_ids, tiny_model
from vectorstream.attention import ContextDB, Session, SparseConfig, forward
from vectorstream.attention._layers import BufferedLayer, KVRows
from vectorstream.attention._scan import scan_step

SPARSE = SparseConfig(alpha=1e-2, full_below=0, n_init=4, n_last=32, sketch_min=0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama")


@pytest.fixture(scope="module")
def stored(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A 400-token context stored in a ContextDB, and 30 more ids to decode after it."""
    path = tmp_path_factory.mktemp("ctx")
    ids = random_ids(430, seed=21)[0].tolist()
    session = Session(SparseConfig(mode="full"))
    with torch.inference_mode():
        forward(model, torch.tensor([ids[:400]]), session)
    session.token_ids = ids[:400]
    ContextDB(path).store(session, build_index=False)
    return path, ids


def _mapped_files(tensor: torch.Tensor) -> set[str]:
    """Files of this process's memory maps that contain ``tensor``'s first byte."""
    address = tensor.data_ptr()
    names = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi and len(fields) > 5:
            names.add(fields[5])
    return names


def test_mapped_kv_equals_loaded_kv_bit_for_bit(stored: tuple[Path, list]) -> None:
    path, _ = stored
    db = ContextDB(path)
    (info,) = db.contexts()
    for length in (None, 123):
        loaded = db.load_kv(info.id, length)
        mapped = db.load_kv(info.id, length, mmap=True)
        assert len(mapped) == len(loaded) == info.n_layers
        for (k, v), (mk, mv) in zip(loaded, mapped, strict=True):
            assert torch.equal(k, mk) and torch.equal(v, mv)
    # The mapped tensors are views of the file itself, not copies in memory.
    keys = db.load_kv(info.id, mmap=True)[1][0]
    assert any(name.endswith("kv.safetensors") for name in _mapped_files(keys))


def _decode(model: torch.nn.Module, session: Session, ids: list[int]) -> torch.Tensor:
    rows = []
    with torch.inference_mode():
        for token in ids:
            rows.append(forward(model, torch.tensor([[token]]), session).logits[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("config", [SparseConfig(mode="full"), SPARSE])
def test_reopened_mapped_context_decodes_like_the_in_memory_one(
    model: torch.nn.Module, stored: tuple[Path, list], config: SparseConfig
) -> None:
    path, ids = stored
    db = ContextDB(path)
    mapped, rest = db.create_session(ids[:401], config)
    # In memory and below sketch_min: the original one-softmax flat scan, as the reference.
    plain = dataclasses.replace(config, sketch_min=10**9)
    loaded, rest2 = db.create_session(ids[:401], plain, mmap=False)
    assert rest == rest2 == ids[400:401] and mapped.reused_tokens == 400
    assert all(layer.base_len == 400 for layer in mapped.layers if isinstance(layer, BufferedLayer))
    got = _decode(model, mapped, ids[400:430])
    want = _decode(model, loaded, ids[400:430])
    if config.mode == "full":
        assert torch.equal(got, want)  # the same SDPA over the same numbers
    else:
        # The mapped step attends window and DIPR set in parts, the in-memory one in one softmax.
        assert torch.allclose(got, want, atol=1e-5)
        assert [s.layers[1].selected for s in mapped.stats] == [
            s.layers[1].selected for s in loaded.stats
        ]
    assert mapped.get_seq_length() == 430
    # Storing the mapped session writes the stored part and the new tokens together.
    mapped.token_ids = ids[:430]
    new_id = db.store(mapped, build_index=False)
    for (k, v), (k2, v2) in zip(db.load_kv(new_id), loaded.kv(), strict=True):
        assert torch.equal(k[:, :400], k2[:, :400]) and torch.equal(v[:, :400], v2[:, :400])
        # The new tokens' keys carry the rounding of the two attention paths in earlier layers.
        assert torch.allclose(k, k2, atol=1e-5) and torch.allclose(v, v2, atol=1e-5)
    db.delete(new_id)


def test_a_prefill_chunk_after_a_mapped_context_is_exact(
    model: torch.nn.Module, stored: tuple[Path, list]
) -> None:
    path, ids = stored
    db = ContextDB(path)
    mapped, rest = db.create_session(ids[:430], SPARSE)
    assert len(rest) == 30
    with torch.inference_mode():
        got = forward(model, torch.tensor([rest]), mapped).logits[0]
        plain = Session(SparseConfig(mode="full"))
        want = forward(model, torch.tensor([ids[:430]]), plain).logits[0, 400:]
    assert torch.allclose(got, want, atol=1e-4)
    # Cropping into the stored part moves what is left into memory.
    mapped.crop(-40)
    assert mapped.get_seq_length() == 390
    for (k, _), (k2, _) in zip(mapped.kv(), plain.kv(), strict=True):
        assert torch.allclose(k, k2[:, :390], atol=1e-5)


def _raw(h_kv: int, n: int, d: int, spread: float, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, h_kv, n, d, generator=gen) * spread
    values = torch.randn(1, h_kv, n, d, generator=gen)
    return keys, values


@pytest.mark.parametrize(("alpha", "spread"), [(1e-3, 3.0), (1e-2, 1.0), (0.0, 2.0)])
def test_sketch_scan_keeps_exactly_the_keys_of_the_float32_scan(
    alpha: float, spread: float
) -> None:
    h_kv, g, n, d = 2, 3, 900, 32
    keys, values = _raw(h_kv, n, d, spread, seed=5)
    query = torch.randn(1, h_kv * g, 1, d, generator=torch.Generator().manual_seed(6)) * spread
    outs, picks = [], []
    for sketch_min in (0, 10**9):
        cfg = SparseConfig(alpha=alpha, full_below=0, n_init=4, n_last=64, sketch_min=sketch_min)
        session = Session(cfg)
        k_all, v_all = session.update(keys, values, 0)
        out, mode = session.attend(0, query, k_all, v_all, d**-0.5)
        assert mode == "flat"
        outs.append(out)
        picks.append(session.stats[-1].layers[0].selected)
    assert picks[0] == picks[1]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_gqa_shared_rows_equal_per_head_selection() -> None:
    """One gather per KV head for its g query heads gives each head its own DIPR result."""
    h_kv, g, n, d = 3, 3, 700, 16
    keys, values = _raw(h_kv, n, d, 2.5, seed=8)
    q = torch.randn(h_kv, g, d, generator=torch.Generator().manual_seed(9)) * 2.5
    beta, scaling = 20.0, d**-0.5
    session = Session(SPARSE)
    session.update(keys, values, 0)
    layer = session.layers[0]
    assert isinstance(layer, BufferedLayer)
    from vectorstream.attention._layers import Sketch

    shared = scan_step(KVRows.of(keys, values), q, 4, n - 32, beta, scaling, Sketch(layer))
    # Per head: every query head as its own KV head (keys repeated), one query each.
    rep_k = keys[0].repeat_interleave(g, dim=0).unsqueeze(0)
    rep_v = values[0].repeat_interleave(g, dim=0).unsqueeze(0)
    alone = scan_step(
        KVRows.of(rep_k, rep_v), q.reshape(h_kv * g, 1, d), 4, n - 32, beta, scaling, None
    )
    assert shared.selected == alone.selected
    assert torch.allclose(
        shared.out.reshape(h_kv * g, d), alone.out.reshape(h_kv * g, d), atol=1e-5
    )
    # The union is read once per KV head: at least each head's own count, at most the middle.
    assert all(e >= s for e, s in zip(shared.exact, shared.selected, strict=True))


def test_config_rejects_a_negative_sketch_threshold() -> None:
    from vectorstream.errors import ConfigError

    with pytest.raises(ConfigError):
        SparseConfig(sketch_min=-1)
