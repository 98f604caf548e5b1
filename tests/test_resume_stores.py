"""SIGKILL an ingest into each embedded vector store, resume it: exactly the reference records.

LanceDB has its own, longer series (tests/test_resume.py) and PostgreSQL its own
(tests/test_store_pgvector.py). One trial per store runs by default to keep the suite short;
five per store run under the slow marker.
"""

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

STORES = {
    "qdrant": lambda root: f"qdrant:{root / 'qdrant'}",
    "milvus": lambda root: f"milvus:{root / 'milvus.db'}",
    "chroma": lambda root: f"chroma:{root / 'chroma'}",
}


def _start(corpus: Path, uri: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(corpus), uri, "1", "0.02"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _complete(corpus: Path, uri: str) -> float:
    started = time.perf_counter()
    proc = _start(corpus, uri)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    return time.perf_counter() - started


def _stored(uri: str) -> tuple[set[str], int]:
    from vectorstream.stores import open_store

    store = open_store(uri, "documents")
    try:
        return store.ids(), store.count()
    finally:
        store.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume-stores") / "corpus"
    write_big_corpus(root, files=6, paragraphs=16)
    return root


@pytest.fixture(scope="module")
def references(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = {}
    for name, make in STORES.items():
        pytest.importorskip(
            {"qdrant": "qdrant_client", "milvus": "pymilvus", "chroma": "chromadb"}[name]
        )
        uri = make(tmp_path_factory.mktemp(f"ref-{name}"))
        duration = _complete(corpus, uri)
        ids, count = _stored(uri)
        assert count == len(ids) > 20
        out[name] = (ids, duration)
    return out


def _trial(name: str, corpus: Path, references: dict[str, tuple], root: Path, seed: int) -> None:
    expected, duration = references[name]
    uri = STORES[name](root)
    rng = random.Random(seed)
    proc = _start(corpus, uri)
    time.sleep(rng.uniform(0.15, 0.85) * duration)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, "the ingest finished before it could be killed"
    _complete(corpus, uri)
    ids, count = _stored(uri)
    assert count == len(ids), "duplicates after resume"
    assert ids == expected


@pytest.mark.parametrize("name", sorted(STORES))
def test_sigkill_then_resume_per_store(name, corpus, references, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _trial(name, corpus, references, tmp_path, 7)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20, 25))
@pytest.mark.parametrize("name", sorted(STORES))
def test_sigkill_then_resume_per_store_many(name, seed, corpus, references, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _trial(name, corpus, references, tmp_path, seed)
