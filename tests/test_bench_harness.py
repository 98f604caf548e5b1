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

from _common import format_table, run_measured  # noqa: E402


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
    rows = {row["system"]: row for row in data["summary"]}
    assert set(rows) == {"fastembed", "embed-anything"}
    for row in rows.values():
        assert row["ok"] is False
        assert "no virtual environment" in row["error"]
    assert data["corpus"]["files"] == 5
    assert "fastembed" in (tmp_path / "BENCHMARKS.md").read_text()


def _ingest_available() -> bool:
    try:
        import vectorstream

        return callable(vectorstream.ingest) and callable(vectorstream.load_model)
    except (AttributeError, ImportError):
        return False


@pytest.mark.skipif(not _ingest_available(), reason="vectorstream.ingest is not there yet")
def test_quick_run_measures_ingests_and_agrees(tmp_path: Path) -> None:
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
    rows = {row["system"]: row for row in data["summary"]}
    for name in ("vectorstream-fp32", "sentence-transformers", "limit"):
        row = rows[name]
        assert row["ok"], row.get("error")
        assert row["chunks"] > 0 and row["tokens"] >= row["chunks"]
        assert row["tokens_per_s"] > 0
        assert row["peak_rss_mib"] > 50  # a model is loaded: the sampler saw the process
    # The limit runs vectorstream's own chunk texts.
    assert rows["limit"]["chunks"] == rows["vectorstream-fp32"]["chunks"]
    assert rows["vectorstream-fp32"]["tokens_per_s_vs_fp32"] == pytest.approx(1.0)

    agreement = data["agreement"]
    assert agreement["reference"] == "vectorstream-fp32"
    # sentence-transformers is the reference implementation: same vectors for the same texts.
    assert agreement["sentence-transformers"]["probe_mean"] > 0.999
    assert agreement["limit"]["joined_mean"] > 0.999
    assert agreement["limit"]["joined_texts"] == rows["limit"]["chunks"]

    scaling = data["memory_scaling"]["vectorstream-fp32"]
    assert scaling["x10_files"] == 2 * data["corpus"]["files"]
    assert scaling["ratio"] > 0

    png = tmp_path / "results" / "peers.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| vectorstream-fp32 |" in report and "## Goals" in report


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
