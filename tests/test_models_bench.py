"""Smoke test of benchmarks/models.py (marked bench: run on demand with -m bench)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "models.py"


@pytest.mark.bench
def test_models_benchmark_writes_its_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--texts", "8", "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "| ort-int8 | sorted |" in run.stdout
    data = json.loads(out.read_text())
    systems = {(row["system"], row["ordering"]) for row in data["rows"]}
    assert ("ort-fp32", "unsorted") in systems and ("torch", "sorted") in systems
    assert any(system == "sentence-transformers" for system, _ in systems)
    assert all(row["tokens_per_s"] > 0 for row in data["rows"])
    fp32 = [r for r in data["rows"] if r["system"] in ("ort-fp32", "torch")]
    assert all(r["min_cosine_to_ort_fp32"] > 0.9999 for r in fp32)
