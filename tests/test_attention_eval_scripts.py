"""The real-model attention evaluations under benchmarks/attention/, run on a tiny random Llama.

Each script's core function runs at toy sizes (seconds, no SmolLM2), so CI proves the scripts
work; where the answer is known (β = ∞, a budget covering every key, reuse with full attention)
the test checks it is exact.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPTS = Path(__file__).resolve().parents[1] / "benchmarks" / "attention"


def _load(name: str) -> ModuleType:
    module_name = f"attention_eval_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, list[int]]:
    common = _load("quality").C
    common.set_threads(1)
    return common.tiny_model(seed=0), common.text_ids(None, 400, seed=1)


def _by(rows: list[dict[str, Any]], method: str, alpha: float | None = None) -> dict[str, Any]:
    return next(r for r in rows if r["method"] == method and r["alpha"] == alpha)


def test_quality_is_exact_at_beta_infinity_and_baselines_share_the_budget(
    tiny: tuple[Any, list[int]],
) -> None:
    quality = _load("quality")
    model, ids = tiny
    rows = quality.evaluate_length(model, ids, 160, 6, [0.0, 0.9], n_init=2, n_last=16)
    assert [r["method"] for r in rows] == ["full"] + ["dipr", "window", "topk"] * 2
    exact = _by(rows, "dipr", 0.0)
    assert exact["kl"] < 1e-6 and exact["top1"] == 1.0 and exact["attended"] == 1.0
    # A budget covering every middle key makes both baselines full attention too.
    for method in ("window", "topk"):
        row = _by(rows, method, 0.0)
        assert row["kl"] < 1e-6 and row["top1"] == 1.0
    sparse = _by(rows, "dipr", 0.9)
    assert sparse["attended"] < 1.0
    for method in ("window", "topk"):
        assert _by(rows, method, 0.9)["attended"] == pytest.approx(sparse["attended"], abs=0.02)
    for row in rows:
        assert 0.0 <= row["top1"] <= 1.0 and row["kl"] >= -1e-6 and row["ppl"] > 0


def test_topk_keeps_the_best_keys_and_window_the_latest(tiny: tuple[Any, list[int]]) -> None:
    common = _load("quality").C
    model, ids = tiny
    base, _ = common.prefill(model, ids[:100])
    cfg = common.SparseConfig(alpha=0.5, n_init=2, n_last=8, mode="flat", max_queries=0)
    for selector in ("window", "topk"):
        session = common.fork(base, cfg, selector, {0: 5, 1: 7})
        common.teacher_forced(model, session, ids[100:102])
        layers = session.stats[-1].layers
        assert [layer.selected[0] for layer in layers] == [5, 7]
        assert all(layer.window == 2 + 8 for layer in layers)


def test_reuse_full_matches_recompute(tiny: tuple[Any, list[int]], tmp_path: Path) -> None:
    reuse = _load("reuse")
    model, ids = tiny
    rows = reuse.evaluate_length(
        model, ids, 200, [0.0], question_tokens=4, new_tokens=4, db_path=str(tmp_path)
    )
    assert [r["method"] for r in rows] == ["recompute", "reuse-full", "reuse-sparse"]
    assert _by(rows, "reuse-full")["agree"] == 1.0
    assert _by(rows, "reuse-sparse", 0.0)["agree"] == 1.0  # β = ∞ decodes exactly
    assert all(r["reused_tokens"] == 200 for r in rows[1:])
    assert all(r["ttft_s"] > 0 for r in rows)


def test_passkey_rows_and_exact_sparse_answers(tiny: tuple[Any, list[int]]) -> None:
    passkey = _load("passkey")
    model, ids = tiny
    rows, trials = passkey.evaluate(model, None, ids, 150, [0.2, 0.8], [0.0], answer_tokens=3)
    assert len(rows) == 4 and len(trials) == 4
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    for depth in (0.2, 0.8):
        answers = {t["method"]: t["answer"] for t in trials if t["depth"] == depth}
        assert answers["full"] == answers["dipr"]  # α = 0 is full attention


def test_graph_recall_baselines(tiny: tuple[Any, list[int]]) -> None:
    graph = _load("graph")
    model, ids = tiny
    rows = graph.evaluate_length(model, ids, 256, [0.5], layers=[1], queries=3, capacity=16)
    methods = {r["method"] for r in rows}
    assert {"shared", "per-head", "key-only", "hnsw"} <= methods
    for row in rows:
        if row["recall"] is not None:
            assert 0.0 <= row["recall"] <= 1.0
            assert 0.0 < row["touched"] <= 1.0


def test_quality_main_writes_json_and_chart(tmp_path: Path) -> None:
    quality = _load("quality")
    out, png = tmp_path / "q.json", tmp_path / "q.png"
    args = ["--model", "tiny", "--quick", "--lengths", "96", "--steps", "3"]
    quality.main([*args, "--out", str(out), "--plot", str(png)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "attention_quality" and data["rows"][0]["method"] == "full"
    assert png.stat().st_size > 0


def test_quality_pools_misses_over_texts(tmp_path: Path) -> None:
    quality = _load("quality")
    out = tmp_path / "q.json"
    args = ["--model", "tiny", "--quick", "--lengths", "96", "--steps", "4", "--texts", "1", "2"]
    quality.main([*args, "--alphas", "0.9", "--no-baselines", "--out", str(out)])
    data = json.loads(out.read_text())
    assert {r["text"] for r in data["rows"]} == {1, 2}
    pooled = {r["method"]: r for r in data["pooled"]}
    per_text = [r for r in data["rows"] if r["method"] == "dipr"]
    assert pooled["dipr"]["steps"] == sum(r["steps"] for r in per_text) == 8
    assert pooled["dipr"]["top1_misses"] == sum(r["top1_misses"] for r in per_text)
    for row in per_text:
        assert len(row["miss_steps"]) == len(row["miss_margins"]) == row["top1_misses"]
        assert all(m >= 0 for m in row["miss_margins"])
    assert pooled["dipr"]["top1"] == 1.0 - pooled["dipr"]["top1_misses"] / 8
    assert pooled["full"]["top1"] == 1.0 and pooled["full"]["texts"] == 2


def test_decode_speed_rows_are_exact_at_beta_infinity(tmp_path: Path) -> None:
    speed = _load("decode_speed")
    out = tmp_path / "s.json"
    args = ["--model", "tiny", "--quick", "--lengths", "300", "--n-last", "16", "--alphas", "0"]
    speed.main([*args, "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["full", "flat", "graph", "full"]
    assert all(r["top1"] == 1.0 and r["tok_s"] > 0 for r in rows)
    # β = ∞ attends every key; the graph path scores keys through its index.
    assert rows[1]["attended"] == rows[2]["attended"] == 1.0


def test_mass_oracle_is_exact_at_zero_and_keeps_fewer_keys_as_it_grows(
    tiny: tuple[Any, list[int]],
) -> None:
    quality = _load("quality")
    model, ids = tiny
    rows = quality.evaluate_length(
        model, ids, 160, 4, [], n_init=2, n_last=16, baselines=False, masses=[0.0, 0.3]
    )
    exact, loose = (r for r in rows if r["method"] == "mass")
    assert exact["mass"] == 0.0 and exact["kl"] < 1e-6 and exact["top1"] == 1.0
    assert exact["attended"] > loose["attended"] and loose["kl"] > exact["kl"]


def test_calibration_feeds_quality_on_held_out_text(tmp_path: Path) -> None:
    calibrate, quality = _load("calibrate"), _load("quality")
    cal_json, q_json = tmp_path / "c.json", tmp_path / "q.json"
    common = ["--model", "tiny", "--quick", "--lengths", "200", "--n-last", "16"]
    budgets = ["--budgets", "0.96", "0.01"]
    calibrate.main([*common, "--alphas", "0.9", "0.5", *budgets, "--out", str(cal_json)])
    data = json.loads(cal_json.read_text())
    assert {(c["layer"], c["alpha"]) for c in data["costs"]} == {
        (layer, a) for layer in range(2) for a in (0.9, 0.5)
    }
    fits, too_small = data["allocations"]
    assert "below the least" in too_small["error"]
    # A random model's attention is flat, so α = 0.9 still keeps most keys; 0.96 leaves room.
    assert fits["attended"] <= 0.96 and set(fits["layer_alpha"]) == {"0", "1"}
    args = [*common, "--steps", "3", "--texts", "0", "--alphas", "0.9", "--no-baselines"]
    quality.main([*args, "--calibrated", str(cal_json), "--out", str(q_json)])
    rows = json.loads(q_json.read_text())["rows"]
    (row,) = [r for r in rows if r["method"] == "calibrated"]
    assert row["budget"] == 0.96 and row["steps"] == 3
    # Decoding with the allocation attends about what the calibration predicted.
    assert row["attended"] == pytest.approx(fits["attended"], abs=0.15)
