"""Ingest jobs: private upload folders, removed afterwards; names cleaned; order; shutdown."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

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
