"""Sessions on tiny random Llama and Qwen2 models (GQA): exactness, statistics, reuse, generate."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from _attention_support import random_ids, tiny_model
from vectorstream.attention import ContextDB, Session, SparseConfig, generate

KINDS = ["llama", "qwen2"]
EXACT = SparseConfig(alpha=0.0, full_below=0, n_init=4, n_last=16, graph_min=64)


@pytest.fixture(scope="module", params=KINDS)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_model(request.param)


def _decode_pair(
    model: torch.nn.Module, ids: torch.Tensor, session: Session, steps: int
) -> tuple[float, list[int]]:
    """Greedy-decode with a reference DynamicCache and ``session``; max |Δ logits| over steps."""
    ref = DynamicCache()
    worst = 0.0
    tokens = []
    with torch.inference_mode():
        a = model(ids, past_key_values=ref).logits[:, -1:]
        b = model(ids, past_key_values=session).logits[:, -1:]
        worst = float((a - b).abs().max())
        for _ in range(steps):
            nxt = a.argmax(-1)
            tokens.append(int(nxt))
            a = model(nxt, past_key_values=ref).logits
            b = model(nxt, past_key_values=session).logits
            worst = max(worst, float((a - b).abs().max()))
    return worst, tokens


def test_infinite_beta_flat_equals_full_attention(model: torch.nn.Module) -> None:
    session = Session(EXACT)
    worst, _ = _decode_pair(model, random_ids(300), session, steps=6)
    assert worst <= 1e-4
    steps = session.stats
    assert len(steps) == 6
    for step in steps:
        assert [s.mode for s in step.layers] == ["flat", "flat"]
        for layer in step.layers:
            assert layer.window == 20
            # β = ∞ selects the whole middle: every key is attended.
            assert all(sel == layer.total - layer.window for sel in layer.selected)
            assert layer.attended_fraction == pytest.approx(1.0)


def test_infinite_beta_graph_equals_full_attention(model: torch.nn.Module) -> None:
    ids = random_ids(300, seed=1)
    session = Session(EXACT)
    with torch.inference_mode():
        model(ids, past_key_values=session)
    session.install_graphs(session.build_graphs(), session.get_seq_length())
    assert set(session.graphs) == {1}  # layer 0 is a flat layer: no graph
    fresh = Session(EXACT)
    fresh.install_graphs(session.graphs, 300)
    worst, _ = _decode_pair(model, ids, fresh, steps=4)
    assert worst <= 1e-4
    assert [s.mode for s in fresh.stats[-1].layers] == ["flat", "graph"]


def test_sparse_decoding_selects_within_beta(model: torch.nn.Module) -> None:
    # β = 0 keeps only keys tied with the best score: at most one key per head in practice.
    session = Session(SparseConfig(alpha=1.0, full_below=0, n_last=8))
    _decode_pair(model, random_ids(200, seed=2), session, steps=3)
    for step in session.stats:
        for layer in step.layers:
            assert all(sel <= 1 for sel in layer.selected)
            assert all(t == layer.total - layer.window for t in layer.touched)
            assert layer.attended_fraction < 0.1


def test_short_contexts_use_full_attention(model: torch.nn.Module) -> None:
    session = Session(SparseConfig(alpha=0.5, full_below=512))
    worst, _ = _decode_pair(model, random_ids(100, seed=3), session, steps=2)
    assert worst == 0.0
    assert {s.mode for step in session.stats for s in step.layers} == {"full"}


def test_reuse_then_full_decoding_equals_recomputing(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    ids = random_ids(400, seed=4)[0].tolist()
    db = ContextDB(tmp_path, SparseConfig(mode="full"))
    first = generate(model, ids[:300], db=db, max_new_tokens=1)
    assert first.reused_tokens == 0
    context_id = db.store(first.session)

    reopened = ContextDB(tmp_path, SparseConfig(mode="full"))
    assert [c.id for c in reopened.contexts()] == [context_id]
    # A longer prompt sharing the first 300 tokens reuses them and runs the other 100.
    session, remaining = reopened.create_session(ids)
    assert session.reused_tokens == 300 and remaining == ids[300:]
    with torch.inference_mode():
        reused = model(torch.tensor([remaining]), past_key_values=session).logits
        recomputed = model(torch.tensor([ids]), past_key_values=DynamicCache()).logits[:, 300:]
    assert float((reused - recomputed).abs().max()) <= 1e-4

    again = generate(model, ids, db=reopened, config=SparseConfig(mode="full"), max_new_tokens=6)
    plain = generate(model, ids, config=SparseConfig(mode="full"), max_new_tokens=6)
    assert again.reused_tokens == 300
    assert again.tokens == plain.tokens


def test_partial_reuse_searches_the_full_index_under_a_filter(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    ids = random_ids(500, seed=5)[0].tolist()
    db = ContextDB(tmp_path, EXACT)
    with torch.inference_mode():
        base = Session(EXACT)
        model(torch.tensor([ids]), past_key_values=base)
    base.token_ids = list(ids)
    db.store(base)
    assert db.contexts()[0].indexed_layers == (1,)
    # Share 400 of the 500 stored tokens, then diverge.
    other = ids[:400] + random_ids(50, seed=6)[0].tolist()
    session, remaining = db.create_session(other)
    assert session.reused_tokens == 400 and session.graph_limit == 400
    assert len(remaining) == 50
    ref = DynamicCache()
    with torch.inference_mode():
        model(torch.tensor([other[:400]]), past_key_values=ref)
    # β = ∞ through the filtered graph must still equal full attention.
    worst, _ = _decode_pair_from(model, torch.tensor([remaining]), session, ref, steps=3)
    assert worst <= 1e-4
    assert session.stats[-1].layers[1].mode == "graph"


def _decode_pair_from(
    model: torch.nn.Module, ids: torch.Tensor, session: Session, ref: DynamicCache, steps: int
) -> tuple[float, list[int]]:
    with torch.inference_mode():
        a = model(ids, past_key_values=ref).logits[:, -1:]
        b = model(ids, past_key_values=session).logits[:, -1:]
        worst = float((a - b).abs().max())
        tokens = []
        for _ in range(steps):
            nxt = a.argmax(-1)
            tokens.append(int(nxt))
            a = model(nxt, past_key_values=ref).logits
            b = model(nxt, past_key_values=session).logits
            worst = max(worst, float((a - b).abs().max()))
    return worst, tokens


def test_import_context_and_stored_tensors_round_trip(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    ids = random_ids(200, seed=7)
    cache = DynamicCache()
    with torch.inference_mode():
        model(ids, past_key_values=cache)
    db = ContextDB(tmp_path)
    context_id = db.import_context(ids, cache)
    info = db.contexts()[0]
    assert (info.id, info.n_tokens, info.n_layers, info.n_kv_heads) == (context_id, 200, 2, 2)
    kv = db.load_kv(context_id)
    for (k, v), layer in zip(kv, cache.layers, strict=True):
        assert torch.equal(k, layer.keys[0]) and torch.equal(v, layer.values[0])
    assert set(db.load_graphs(context_id)) == {1}
    # Storing the same tokens again replaces the context rather than adding one.
    assert db.import_context(ids, cache, build_index=False) == context_id
    assert len(db.contexts()) == 1
    session, remaining = db.create_session(ids)
    assert session.reused_tokens == 199 and len(remaining) == 1


def test_generate_sampling_is_seeded_and_stops_at_eos(model: torch.nn.Module) -> None:
    ids = random_ids(50, seed=8)
    a = generate(
        model, ids, do_sample=True, temperature=1.5, top_k=20, top_p=0.9, seed=3, max_new_tokens=8
    )
    b = generate(
        model, ids, do_sample=True, temperature=1.5, top_k=20, top_p=0.9, seed=3, max_new_tokens=8
    )
    assert a.tokens == b.tokens and len(a.tokens) == 8
    greedy = generate(model, ids, max_new_tokens=8)
    stop = greedy.tokens[2]
    cut = generate(model, ids, max_new_tokens=8, eos_token_id=stop)
    assert cut.tokens == greedy.tokens[: greedy.tokens.index(stop) + 1]
    # The session holds the prompt and every new token but the last.
    assert cut.session.get_seq_length() == 50 + len(cut.tokens) - 1
    assert cut.session.token_ids[:50] == ids[0].tolist()


@pytest.mark.parametrize(("alpha", "spread"), [(0.01, 4.0), (0.5, 4.0), (0.01, 0.3)])
def test_sparse_step_equals_attention_over_window_and_dipr_set(alpha: float, spread: float) -> None:
    """One decode step on raw tensors against a brute-force softmax over window ∪ DIPR set."""
    gen = torch.Generator().manual_seed(11)
    h_kv, g, n, d = 2, 3, 700, 16
    cfg = SparseConfig(alpha=alpha, full_below=0, n_init=4, n_last=32)
    session = Session(cfg)
    keys = torch.randn(1, h_kv, n, d, generator=gen) * spread
    values = torch.randn(1, h_kv, n, d, generator=gen)
    k_all, v_all = session.update(keys, values, 0)
    query = torch.randn(1, h_kv * g, 1, d, generator=gen) * spread
    scaling = d**-0.5
    out, mode = session.attend(0, query, k_all, v_all, scaling)
    assert mode == "flat"
    beta = cfg.beta(d, scaling)
    window = torch.zeros(n, dtype=torch.bool)
    window[:4] = True
    window[n - 32 :] = True
    stats = session.stats[-1].layers[0]
    for head in range(h_kv * g):
        kv = head // g
        raw = keys[0, kv] @ query[0, head, 0]
        keep = window | (raw >= raw.max() - beta)
        weights = torch.softmax((raw * scaling).masked_fill(~keep, float("-inf")), 0)
        expected = weights @ values[0, kv]
        assert torch.allclose(out[0, 0, head], expected, atol=1e-5)
        assert stats.selected[head] == int((keep & ~window).sum())
    assert stats.window == 36 and all(t == n - 36 for t in stats.touched)


def test_buffered_cache_grows_and_crops_like_dynamic_cache() -> None:
    gen = torch.Generator().manual_seed(12)
    session, ref = Session(), DynamicCache()
    for step, t in enumerate([300, 1, 1, 200, 1]):
        k = torch.randn(1, 2, t, 8, generator=gen)
        v = torch.randn(1, 2, t, 8, generator=gen)
        got, want = session.update(k, v, 0), ref.update(k, v, 0)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        if step == 2:
            session.crop(-5)
            ref.crop(-5)
    assert session.get_seq_length() == ref.get_seq_length() == 498


def test_generate_passes_the_cache_under_the_models_own_argument(model: torch.nn.Module) -> None:
    # Newer transformers deprecate ``past_key_values`` for ``cache``; the package must not lean on
    # the deprecated name where the model takes the new one (nor fail where it does not).
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        out = generate(model, random_ids(40, seed=2), max_new_tokens=3)
    assert len(out.tokens) == 3 and out.session.get_seq_length() == 42
