"""SIGKILL an ingest at random moments, start it again: exactly the records of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _pipeline_support import write_big_corpus

HERE = Path(__file__).parent
CHILD = HERE / "_resume_child.py"


def _run(
    corpus: Path, store: str, *, kill_after: float | None = None, workers: int = 1
) -> int | None:
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(corpus), store, str(workers), "0.02"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        return False
    time.sleep(kill_after)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return killed


def _rows(store_dir: Path) -> list[tuple[str, str, str]]:
    import lancedb

    table = lancedb.connect(str(store_dir)).open_table("documents")
    rows = table.to_arrow().select(["id", "source", "text"]).to_pylist()
    return sorted((r["id"], r["source"], r["text"]) for r in rows)


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[tuple[str, str, str]], float]:
    root = tmp_path_factory.mktemp("resume")
    corpus = root / "corpus"
    write_big_corpus(corpus)
    store = root / "reference"
    started = time.perf_counter()
    _run(corpus, f"lancedb://{store}")
    duration = time.perf_counter() - started
    rows = _rows(store)
    assert len(rows) == len({r[0] for r in rows}) > 40
    return corpus, rows, duration


def _trial(
    tmp_path: Path, reference: tuple[Path, list[tuple[str, str, str]], float], seed: int
) -> None:
    corpus, expected, duration = reference
    rng = random.Random(seed)
    store = tmp_path / f"store{seed}"
    uri = f"lancedb://{store}"
    # Kill moments spread over the whole run: start-up, parsing, embedding, commits, the end.
    kills = [
        _run(corpus, uri, kill_after=rng.uniform(0.1, 0.9) * duration)
        for _ in range(rng.randint(1, 2))
    ]
    assert kills[0], "the ingest finished before it could be killed"
    _run(corpus, uri)
    rows = _rows(store)
    assert len(rows) == len({r[0] for r in rows}), "duplicates after resume"
    assert rows == expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_then_resume_gives_exact_records(tmp_path: Path, reference, seed: int) -> None:  # type: ignore[no-untyped-def]
    _trial(tmp_path, reference, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_sigkill_then_resume_many(tmp_path: Path, reference, seed: int) -> None:  # type: ignore[no-untyped-def]
    _trial(tmp_path, reference, seed)


def test_sigint_stops_cleanly_and_resumes(tmp_path: Path, reference) -> None:  # type: ignore[no-untyped-def]
    corpus, expected, duration = reference
    store = tmp_path / "sigint"
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(corpus), f"lancedb://{store}", "1", "0.02"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.6 * duration)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), err.decode()[-2000:]
    _run(corpus, f"lancedb://{store}")
    assert _rows(store) == expected
