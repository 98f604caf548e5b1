"""What an ingest does around the model: starting before the store is open, feeding a model that
waits, sampling memory cheaply, reading DOCX styles once. Real LanceDB where a store is involved."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from _parsers_support import make_docx
from _pipeline_support import FakeEmbedder, write_big_corpus
from vectorstream.parsers import DEFAULT_REGISTRY, ParseOptions
from vectorstream.pipeline import Pipeline, ingest
from vectorstream.pipeline import api as ingest_api
from vectorstream.pipeline.executors._rss import TreeRss
from vectorstream.pipeline.executors.local import flush_now
from vectorstream.pipeline.executors.pool import WorkerPool
from vectorstream.pipeline.options import PipelineOptions
from vectorstream.pipeline.stages.messages import ChunkBatch, Task
from vectorstream.pipeline.stages.process import ProcessConfig
from vectorstream.sources import iter_files
from vectorstream.stores import certainly_new, open_store
from vectorstream.types import Section, Source

# ------------------------------------------------------------------ is the store new?


def test_a_lancedb_folder_says_which_collections_certainly_do_not_exist(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path / 'db'}"
    assert certainly_new(uri, "documents")  # no folder at all
    store = open_store(uri, "documents", dim=4)
    try:
        # The layout this relies on, as LanceDB itself writes it: the collection's table...
        assert not certainly_new(uri, "documents")
        assert certainly_new(uri, "other")
        store.side_table("manifest").put_many({"a": {"state": "done"}})
    finally:
        store.close()
    # ...and a side table alone (the manifest) also means "not new".
    (tmp_path / "db" / "documents.lance").rename(tmp_path / "db" / "moved.lance")
    assert not certainly_new(uri, "documents")
    assert certainly_new(uri, "moved_away")


def test_stores_that_cannot_tell_cheaply_never_say_new(tmp_path: Path) -> None:
    assert not certainly_new("postgresql://localhost/db", "documents")
    assert not certainly_new(f"qdrant:{tmp_path / 'q'}", "documents")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    assert not certainly_new(f"lancedb://{blocked}", "documents")  # cannot list: may hold it


class _Store:
    def __init__(self, created_new: Any) -> None:
        self.uri, self.collection = "lancedb://x", "documents"
        self.created_new = created_new


def test_early_planner_only_for_a_store_that_was_new(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    assert Pipeline(emb, _Store(True)).early_planner() is not None  # type: ignore[arg-type]
    assert Pipeline(emb, _Store(False)).early_planner() is None  # type: ignore[arg-type]
    assert Pipeline(emb, _Store(object())).early_planner() is None  # type: ignore[arg-type]
    # A manifest file of an older release is taken over once the store is open: wait for it.
    legacy = tmp_path / "legacy.sqlite"
    legacy.write_text("")
    assert Pipeline(emb, _Store(True), legacy_manifest=legacy).early_planner() is None  # type: ignore[arg-type]
    legacy.unlink()
    assert Pipeline(emb, _Store(True), legacy_manifest=legacy).early_planner() is not None  # type: ignore[arg-type]


class _TimedEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def embed_tokenized(self, encodings: Any) -> np.ndarray:
        self.times.append(time.monotonic())
        return super().embed_tokenized(encodings)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_new_store_is_parsed_and_embedded_into_while_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    write_big_corpus(tmp_path / "corpus", files=12, paragraphs=6)
    opened: list[float] = []
    real_open = ingest_api.open_store

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # a store client that takes long to import
        store = real_open(*args, **kwargs)
        opened.append(time.monotonic())
        return store

    monkeypatch.setattr(ingest_api, "open_store", slow_open)
    emb = _TimedEmbedder()
    uri = f"lancedb://{tmp_path / 'db'}"
    report = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=workers)
    assert report.ok and report.files_ok == 12
    # Twelve sources send more messages than the write queue holds: the writer held them, so
    # every chunk was embedded before the store was open.
    assert emb.times and max(emb.times) < opened[0]
    store = open_store(uri, "documents")
    try:
        assert store.count() == report.chunks
    finally:
        store.close()
    # Every source planned early has its manifest row: a second run embeds nothing.
    monkeypatch.setattr(ingest_api, "open_store", real_open)
    again = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=workers)
    assert again.files_skipped == 12 and again.chunks == 0


def test_an_existing_collection_is_planned_from_its_manifest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_big_corpus(tmp_path / "corpus", files=3, paragraphs=4)
    uri = f"lancedb://{tmp_path / 'db'}"
    emb = _TimedEmbedder()
    ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    first_calls = len(emb.times)
    (tmp_path / "corpus" / "doc03_new.md").write_text("# New\n\nA new file about comets.\n")
    seen: list[bool] = []
    real_stages = Pipeline.stages

    def stages(self: Pipeline, remote: Any = None) -> Any:
        seen.append(getattr(self.store, "created_new", None))
        return real_stages(self, remote)

    monkeypatch.setattr(Pipeline, "stages", stages)
    report = ingest([tmp_path / "corpus"], store=uri, model=emb, workers=0)
    assert seen == [False]
    assert report.files_skipped == 3 and report.files_ok == 1
    assert len(emb.times) == first_calls + 1


# ------------------------------------------------------------------ the reader's windows


def test_a_partial_window_goes_only_to_a_model_that_waits() -> None:
    assert flush_now(256, 256, model_starved=False)  # full
    assert flush_now(3, 256, model_starved=True)  # the model has nothing to do
    assert not flush_now(3, 256, model_starved=False)  # the model is busy: let it fill
    assert not flush_now(0, 256, model_starved=True)  # nothing to send


# ------------------------------------------------------------------ parsing beside the model


def _worker_config(parsers: Any = None) -> ProcessConfig:
    """What a parsing worker needs, for the fake model and the default options."""
    emb = FakeEmbedder()
    options = PipelineOptions()
    return ProcessConfig(
        tokenizer_path=str(emb.tokenizer_path),
        max_tokens=emb.max_tokens,
        num_special_tokens=emb.num_special_tokens,
        chunk_options=options.chunk,
        parse_options=options.parse,
        parsers=parsers,
    )


def test_parsing_processes_run_at_the_lowest_priority_by_default(tmp_path: Path) -> None:
    # At nice 10 a parser kept enough of a core to stall the model's lockstep threads; the
    # default is the lowest priority, and a caller's own setting still reaches the process.
    assert PipelineOptions().worker_nice == 19
    (tmp_path / "a.txt").write_text("Parsing runs when the model leaves a core idle.")
    source = next(iter_files([str(tmp_path)]))
    options = PipelineOptions()
    config = _worker_config()
    mine = os.nice(0)  # a worker adds its niceness to this process's own
    for nice in (options.worker_nice, 5):
        pool = WorkerPool(config, 1, 4, nice=nice)
        pool.start()
        try:
            pool.submit(Task(source), threading.Event())
            kinds = []
            while not kinds or kinds[-1] != "SourceDone":
                msg = pool.get(timeout=30)
                assert msg is not None, "the worker sent nothing"
                kinds.append(type(msg).__name__)
            assert psutil.Process(pool.procs[0].pid).nice() == min(19, mine + nice)
        finally:
            pool.close_tasks()
            pool.shutdown(force=True)


@dataclass(frozen=True)
class GcProbe:
    """Parses a ``.probe`` file into one section that says what the collector holds frozen."""

    def parse(self, source: Source, options: ParseOptions, warn: Any) -> Iterator[Section]:
        yield Section(text="probe", source=source.uri, metadata={"frozen": gc.get_freeze_count()})


def test_a_worker_keeps_its_start_up_objects_out_of_the_collectors_sight(tmp_path: Path) -> None:
    # A full collection after a DOCX walked every object the imports made; frozen, they are
    # skipped, and only what parsing leaves is walked.
    (tmp_path / "a.probe").write_text("x")
    source = next(iter_files([str(tmp_path)], include=["*.probe"]))
    config = _worker_config(
        DEFAULT_REGISTRY.with_parser("probe", GcProbe(), extensions=(".probe",))
    )
    pool = WorkerPool(config, 1, 4)
    pool.start()
    try:
        pool.submit(Task(source), threading.Event())
        frozen = None
        while frozen is None:
            msg = pool.get(timeout=30)
            assert msg is not None, "the worker sent nothing"
            assert type(msg).__name__ != "SourceFailed", msg
            if isinstance(msg, ChunkBatch):
                frozen = msg.chunks[0].metadata["frozen"]
    finally:
        pool.close_tasks()
        pool.shutdown(force=True)
    assert frozen > 10_000  # the interpreter, the package, the tokenizer: all frozen


# ------------------------------------------------------------------ memory samples


def test_tree_rss_counts_children_and_looks_for_them_once_per_interval() -> None:
    now = [0.0]
    me = psutil.Process()
    lookups = [0]
    real_children = psutil.Process.children

    class Counted(psutil.Process):
        def children(self, recursive: bool = False) -> list[psutil.Process]:
            lookups[0] += 1
            return real_children(self, recursive=recursive)

    rss = TreeRss(Counted(me.pid), children_every=1.0, clock=lambda: now[0])
    alone = rss.sample()
    assert alone is not None and alone >= me.memory_info().rss // 2
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        assert rss.sample() is not None
        assert lookups[0] == 1  # within the interval: the known processes only
        now[0] = 1.5
        with_child = rss.sample()
        assert lookups[0] == 2
        child_rss = psutil.Process(child.pid).memory_info().rss
        assert with_child is not None and with_child >= me.memory_info().rss + child_rss // 2
    finally:
        child.kill()
        child.wait()
    # A child that has exited counts nothing; the sample still works.
    assert rss.sample() is not None


# ------------------------------------------------------------------ DOCX styles


def test_docx_heading_levels_follow_style_bases_without_xpath_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml.styles import CT_Styles

    from vectorstream.parsers import parse
    from vectorstream.types import Source

    path = make_docx(tmp_path / "d.docx", [("h1", "Top"), ("p", "intro")])
    document = docx.Document(str(path))
    mine = document.styles.add_style("Mine", WD_STYLE_TYPE.PARAGRAPH)
    mine.base_style = document.styles["Heading 2"]
    deeper = document.styles.add_style("Deeper", WD_STYLE_TYPE.PARAGRAPH)
    deeper.base_style = mine
    document.add_paragraph("Custom heading", style="Deeper")
    document.add_paragraph("Under it.")
    document.save(str(path))

    def no_search(self: Any, style_id: str) -> Any:
        raise AssertionError("a style was looked up by an XPath search")

    monkeypatch.setattr(CT_Styles, "get_by_id", no_search)
    sections = list(parse(Source(uri=str(path), path=str(path))))
    last = sections[-1]
    assert "Under it." in last.text
    assert last.headings == ("Top", "Custom heading")  # a level-2 heading under the level-1 one


def test_a_new_store_that_fails_to_open_stops_the_early_run(tmp_path: Path) -> None:
    from vectorstream.errors import StoreLockedError
    from vectorstream.stores._flock import WriterLock

    write_big_corpus(tmp_path / "corpus", files=6, paragraphs=4)
    db = tmp_path / "db"
    other_writer = WriterLock(db / ".locks" / "documents.lock", "collection 'documents'")
    other_writer.acquire()  # another writer holds the collection; its table is not made yet
    try:
        assert certainly_new(f"lancedb://{db}", "documents")
        started = time.monotonic()
        with pytest.raises(StoreLockedError):
            ingest([tmp_path / "corpus"], store=f"lancedb://{db}", model=FakeEmbedder(), workers=1)
        assert time.monotonic() - started < 30  # the parsing worker and threads were stopped
    finally:
        other_writer.release()
    assert not (db / "documents.lance").exists()  # nothing was written
