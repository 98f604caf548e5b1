"""Ingest jobs: private upload folders, removed afterwards; names cleaned; order; shutdown."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vectorstream.errors import ConfigError
from vectorstream.server.jobs import JobManager, TextItem, Upload, safe_name


def wait(manager: JobManager, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        job = manager.get(job_id)
        assert job is not None
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.01)
    raise AssertionError("job did not finish")


class Report:
    files_ok = 2
    files_failed = 0
    chunks = 3
    errors = ()

    def to_dict(self) -> dict[str, Any]:
        return {"files_ok": 2}


def test_uploads_live_in_a_private_folder_only_while_the_job_runs() -> None:
    seen: dict[str, Any] = {}

    def ingest(sources: list[Any], **kwargs: Any) -> Report:
        upload = sources[0]
        folder = Path(upload.path).parent
        seen.update(
            uri=upload.uri,
            text_uri=sources[1].uri,
            data=Path(upload.path).read_bytes(),
            mode=stat.S_IMODE(os.stat(folder).st_mode),
            folder=folder,
            kwargs=kwargs,
        )
        kwargs["on_event"](
            type("E", (), {"progress": type("P", (), {"chunks": 1, "files_done": 1})()})()
        )
        return Report()

    manager = JobManager(store="lancedb:///x", model="M", ingest_fn=ingest)
    state = manager.submit(
        "docs",
        uploads=[Upload("../../etc/passwd", b"hello")],
        texts=[TextItem("", "some text", {})],
    )
    assert state["state"] in ("queued", "running") and state["inputs"] == 2
    job = wait(manager, state["id"])
    assert job["state"] == "done" and job["report"] == {"files_ok": 2}
    assert job["progress"]["chunks"] == 3 and job["progress"]["files_done"] == 1
    assert seen["uri"] == "passwd" and seen["text_uri"] == "text:0" and seen["data"] == b"hello"
    assert seen["mode"] == 0o700
    assert not seen["folder"].exists()  # removed when the job ended
    assert seen["kwargs"]["collection"] == "docs" and seen["kwargs"]["model"] == "M"
    manager.close()


def test_a_failing_ingest_marks_the_job_failed_and_the_next_one_runs() -> None:
    calls: list[str] = []

    def ingest(sources: list[Any], **kwargs: Any) -> Report:
        calls.append(sources[0].uri)
        if sources[0].uri == "bad":
            raise RuntimeError("store is on fire")
        return Report()

    manager = JobManager(store="s", model=None, ingest_fn=ingest)
    bad = manager.submit("c", texts=[TextItem("bad", "x")])
    good = manager.submit("c", texts=[TextItem("good", "y")])
    assert wait(manager, bad["id"])["error"] == "RuntimeError: store is on fire"
    assert wait(manager, good["id"])["state"] == "done"
    assert calls == ["bad", "good"]  # one at a time, in order
    manager.close()


def test_close_cancels_queued_jobs_and_removes_their_uploads() -> None:
    gate = threading.Event()

    def ingest(sources: list[Any], **kwargs: Any) -> Report:
        gate.wait(10)
        return Report()

    manager = JobManager(store="s", model=None, ingest_fn=ingest)
    running = manager.submit("c", uploads=[Upload("a.txt", b"a")])
    queued = manager.submit("c", uploads=[Upload("b.txt", b"b")])
    folders = list(manager._folders)
    assert len(folders) == 2
    threading.Timer(0.2, gate.set).start()
    manager.close()
    assert manager.get(running["id"])["state"] == "done"  # type: ignore[index]
    assert manager.get(queued["id"])["state"] == "failed"  # type: ignore[index]
    assert not any(f.exists() for f in folders)


def test_safe_names() -> None:
    assert safe_name("C:\\Users\\me\\report.pdf", 0) == "report.pdf"
    assert safe_name("../..", 3) == "upload-3"
    assert safe_name("we?ird*name.md", 0) == "we_ird_name.md"


@pytest.mark.parametrize(
    ("collection", "options", "message"),
    [
        ("bad/name", {}, "collection must be"),
        ("has space", {}, "LanceDB collection names"),
        ("c", {"splitter": "foo"}, "unknown splitter"),
        ("c", {"overlap": 300, "chunk_tokens": 256}, "must be smaller"),
        ("c", {"buffer": 1}, "buffer must be at least 16"),
        ("c", {"no_such_option": 1}, "unknown ingest option"),
        ("c", {"store": "lancedb:///elsewhere"}, "the service fixes them"),
    ],
)
def test_bad_job_options_are_refused_before_anything_is_saved(
    collection: str, options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    calls: list[Any] = []
    manager = JobManager(
        store=f"lancedb://{tmp_path}", model=None, ingest_fn=lambda *a, **k: calls.append(a)
    )
    with pytest.raises(ConfigError, match=message):
        manager.submit(collection, texts=[TextItem("t", "text")], options=options)
    assert manager.counts()["queued"] == 0 and not manager._folders
    manager.close()
    assert calls == []


def test_good_job_options_reach_ingest(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def ingest(sources: list[Any], **kwargs: Any) -> Report:
        seen.update(kwargs)
        return Report()

    manager = JobManager(store=f"lancedb://{tmp_path}", model="M", ingest_fn=ingest)
    state = manager.submit(
        "docs", texts=[TextItem("t", "x")], options={"splitter": "tokens", "overlap": 8}
    )
    assert wait(manager, state["id"])["state"] == "done"
    assert seen["splitter"] == "tokens" and seen["overlap"] == 8
    manager.close()


def test_the_service_answers_400_for_a_bad_job_before_any_model_work(tmp_path: Path) -> None:
    from _server_support import FakeEmbedder, client_for
    from vectorstream.server import ServerSettings, create_app

    calls: list[Any] = []
    model = FakeEmbedder()
    settings = ServerSettings(store=f"lancedb://{tmp_path / 'store'}", collection="docs")
    # An open store handed in: the service need not import LanceDB to answer this.
    app = create_app(
        settings, model=model, store=object(), ingest_fn=lambda *a, **k: calls.append(a)
    )

    async def check() -> None:
        async with client_for(app) as client:
            body = {"texts": [{"text": "hello"}], "collection": "no/slashes"}
            r = await client.post("/v1/ingest", json=body)
            assert r.status_code == 400, r.text
            assert "collection must be" in r.json()["error"]["message"]
            files = {"files": ("a.txt", b"hello", "text/plain")}
            r = await client.post("/v1/ingest", data={"collection": "a b"}, files=files)
            assert r.status_code == 400, r.text

    asyncio.run(check())
    assert calls == [] and model.calls == []  # no job ran, nothing was embedded

    with pytest.raises(ConfigError, match="LanceDB collection names"):
        create_app(ServerSettings(store=settings.store, collection="two words"), model=model)
