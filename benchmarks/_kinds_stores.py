"""The store sections of ``kinds.py``: multivector writes, exact MaxSim, search of every kind.

Vectors are generated (unit rows, SPLADE-like sparse weights), not embedded: these sections
measure the stores, and a model would only slow the set-up. Records carry chunk-like text and
the usual fields, as the pipeline writes them.

- ``writes``: token vectors/s of multivector records (~100 rows × 128 each) written through
  ``open_store(..., kind="multivector")`` and the pipeline's retrying writer, in commits of
  ``--write-batch`` records, into LanceDB, Qdrant local mode on disk (``qdrant:PATH``) and in
  memory (``qdrant::memory:``); a fresh collection per round, the targets alternating.
- ``maxsim``: exact MaxSim of a 32-row query over 100 candidates on one core (a child process
  pinned to one CPU with one BLAS thread, ``_kinds_child.py``).
- ``search``: top-10 latency over ``--search-chunks`` records of each kind (dense 384-d, sparse
  over MiniLM's 30,522-term vocabulary, multivector ~100 × 128) in LanceDB after ``optimize()``,
  the kinds alternating query by query.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import percentile, run_measured  # noqa: E402

TOKEN_DIM = 128
TOKENS = (80, 120)  # rows per multivector record: about 100
QUERY_ROWS = 32
DENSE_DIM = 384
VOCABULARY = 30522
SPARSE_TERMS = (80, 200)  # non-zero weights per document, as SPLADE gives a chunk
QUERY_TERMS = (15, 40)
TEXT = "token vectors late interaction " * 20  # ≈ 600 characters, a chunk's worth


@dataclass(frozen=True, slots=True)
class StorePlan:
    """Sizes and rounds of the store sections."""

    work: Path
    rounds: int
    write_records: int
    write_batch: int
    search_chunks: int
    queries: int
    maxsim_candidates: int
    maxsim_repeats: int


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((rows, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def _terms(rng: np.random.Generator, low: int, high: int) -> Any:
    from vectorstream.types import SparseVector

    # Zipf-distributed term ids: a few terms in most texts, most in few, as in real text.
    wanted = int(rng.integers(low, high + 1))
    ids = np.unique(rng.zipf(1.2, size=wanted * 3) % VOCABULARY)[:wanted]
    weights = rng.lognormal(mean=-0.5, sigma=0.6, size=ids.size).astype(np.float32)
    return SparseVector(ids, weights, VOCABULARY)


def _embedding(kind: str, rng: np.random.Generator) -> Any:
    from vectorstream.types import Embedding

    if kind == "dense":
        return Embedding(dense=_unit(rng, 1, DENSE_DIM)[0])
    if kind == "sparse":
        return Embedding(sparse=_terms(rng, *SPARSE_TERMS))
    return Embedding(multivector=_unit(rng, int(rng.integers(TOKENS[0], TOKENS[1] + 1)), TOKEN_DIM))


def _query(kind: str, rng: np.random.Generator) -> Any:
    from vectorstream.types import Embedding

    if kind == "dense":
        return Embedding(dense=_unit(rng, 1, DENSE_DIM)[0])
    if kind == "sparse":
        return Embedding(sparse=_terms(rng, *QUERY_TERMS))
    return Embedding(multivector=_unit(rng, QUERY_ROWS, TOKEN_DIM))


def records(kind: str, n: int, batch: int, seed: int = 0) -> Iterator[list[Any]]:
    """``n`` records of ``kind`` in lists of ``batch`` (generated as they are written)."""
    from vectorstream.types import Record

    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        yield [
            Record(
                id=f"{kind}-{i:07d}",
                embedding=_embedding(kind, rng),
                text=TEXT,
                source=f"doc-{i // 20:05d}.md",
                chunk_index=i % 20,
                start=0,
                end=len(TEXT),
                model="bench",
                headings=("Guide", f"Section {i % 7}"),
            )
            for i in range(start, min(start + batch, n))
        ]


def _dim(kind: str) -> int:
    return {"dense": DENSE_DIM, "sparse": VOCABULARY, "multivector": TOKEN_DIM}[kind]


# -- writes --------------------------------------------------------------------------------------

WRITE_TARGETS: dict[str, Callable[[Path], str]] = {
    "lancedb": lambda root: f"lancedb://{root / 'lance'}",
    "qdrant-local-disk": lambda root: f"qdrant:{root / 'qdrant'}",
    "qdrant-local-memory": lambda root: "qdrant::memory:",
}


def writes(plan: StorePlan, log: Callable[[str], None]) -> dict[str, Any]:
    from vectorstream.stores import open_store
    from vectorstream.stores.retry import RetryPolicy, write_with_retry

    batches = list(records("multivector", plan.write_records, plan.write_batch, seed=1))
    vectors = sum(r.embedding.multivector.shape[0] for b in batches for r in b)
    root = plan.work / "stores-writes"
    seconds: dict[str, list[float]] = {name: [] for name in WRITE_TARGETS}
    errors: dict[str, str] = {}
    for round_index in range(plan.rounds):
        for name, uri_of in WRITE_TARGETS.items():
            if name in errors:
                continue
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            log(f"writes: {name}, round {round_index + 1}")
            try:
                store = open_store(
                    uri_of(root), f"tokens{round_index}", dim=TOKEN_DIM, kind="multivector"
                )
                try:
                    start = time.perf_counter()
                    for batch in batches:
                        write_with_retry(store, batch, RetryPolicy())
                    store.flush()
                    elapsed = time.perf_counter() - start
                    if store.count() != plan.write_records:
                        raise RuntimeError(f"{store.count()} records in the store")
                finally:
                    store.close()
                seconds[name].append(elapsed)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
    shutil.rmtree(root, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    for name in WRITE_TARGETS:
        if name in errors or not seconds[name]:
            rows.append({"system": name, "ok": False, "error": errors.get(name, "not run")})
            continue
        median = statistics.median(seconds[name])
        rows.append(
            {
                "system": name,
                "ok": True,
                "records": plan.write_records,
                "token_vectors": vectors,
                "seconds": median,
                "records_per_s": plan.write_records / median,
                "token_vectors_per_s": vectors / median,
                "rounds": len(seconds[name]),
            }
        )
    return {
        "records": plan.write_records,
        "token_vectors": vectors,
        "dim": TOKEN_DIM,
        "commit_records": plan.write_batch,
        "rows": rows,
    }


# -- exact MaxSim --------------------------------------------------------------------------------


def maxsim(plan: StorePlan, log: Callable[[str], None]) -> dict[str, Any]:
    import os

    from _kinds_child import ONE_THREAD_ENV

    cpu = min(os.sched_getaffinity(0))
    log(f"maxsim: {plan.maxsim_candidates} candidates on cpu {cpu}")
    cmd = [
        sys.executable,
        str(HERE / "_kinds_child.py"),
        "maxsim",
        "--candidates",
        str(plan.maxsim_candidates),
        "--query-tokens",
        str(QUERY_ROWS),
        "--doc-tokens",
        str(TOKENS[0]),
        str(TOKENS[1]),
        "--dim",
        str(TOKEN_DIM),
        "--repeats",
        str(plan.maxsim_repeats),
        "--cpu",
        str(cpu),
    ]
    measured = run_measured(cmd, env={**os.environ, **ONE_THREAD_ENV}, timeout=300)
    if measured.returncode != 0:
        return {"ok": False, "error": measured.stderr_tail[-600:]}
    found: dict[str, Any] = json.loads(measured.stdout_tail.strip().splitlines()[-1])
    return {"ok": True, **found}


# -- search --------------------------------------------------------------------------------------

KINDS = ("dense", "sparse", "multivector")


def search(plan: StorePlan, log: Callable[[str], None]) -> dict[str, Any]:
    from vectorstream.stores import open_store

    root = plan.work / "stores-search"
    shutil.rmtree(root, ignore_errors=True)
    uri = f"lancedb://{root}"
    stores: dict[str, Any] = {}
    build: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for kind in KINDS:
        log(f"search: writing {plan.search_chunks} {kind} records")
        try:
            store: Any = open_store(uri, kind, dim=_dim(kind), kind=kind)
            start = time.perf_counter()
            for batch in records(kind, plan.search_chunks, 256 if kind == "multivector" else 1000):
                store.upsert(batch)
            written = time.perf_counter() - start
            start = time.perf_counter()
            report = store.optimize()
            build[kind] = {
                "write_s": written,
                "optimize_s": time.perf_counter() - start,
                "vector_index": getattr(report, "vector_index_built", None),
            }
            stores[kind] = store
        except Exception as exc:
            errors[kind] = f"{type(exc).__name__}: {exc}"[:500]
    rng = np.random.default_rng(11)
    queries = {kind: [_query(kind, rng) for _ in range(plan.queries)] for kind in stores}
    ms: dict[str, list[float]] = {kind: [] for kind in stores}
    for kind, store in stores.items():
        store.search(queries[kind][0], 10)  # warm-up: opens files, fills caches
    for i in range(plan.queries):
        for kind, store in list(stores.items()):
            if kind in errors:
                continue
            start = time.perf_counter()
            try:
                hits = store.search(queries[kind][i], 10)
            except Exception as exc:
                errors[kind] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            ms[kind].append((time.perf_counter() - start) * 1000)
            if not hits:
                errors[kind] = "a search found nothing"
    for store in stores.values():
        store.close()
    shutil.rmtree(root, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        if kind in errors or not ms.get(kind):
            rows.append({"kind": kind, "ok": False, "error": errors.get(kind, "not run")})
            continue
        rows.append(
            {
                "kind": kind,
                "ok": True,
                "chunks": plan.search_chunks,
                "queries": len(ms[kind]),
                "p50_ms": statistics.median(ms[kind]),
                "p95_ms": percentile(ms[kind], 95),
                **build.get(kind, {}),
            }
        )
    return {"store": "lancedb", "chunks": plan.search_chunks, "k": 10, "rows": rows}


SECTIONS: dict[str, Callable[[StorePlan, Callable[[str], None]], dict[str, Any]]] = {
    "writes": writes,
    "maxsim": maxsim,
    "search": search,
}

__all__ = ["SECTIONS", "StorePlan", "records"]
