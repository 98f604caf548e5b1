"""Parquet and JSONL sinks: files on disk read back with pyarrow / json, the log semantics."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _servers_support import check_side_table, check_write_contract
from _store_support import make_records, unit_rows
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError, StoreLockedError
from vectorstream.stores import open_store
from vectorstream.stores._records import record_dict, records_table
from vectorstream.stores.files import JSONLSink, ParquetSink
from vectorstream.types import Record

DIM = 8


def _same(a: Record, b: Record) -> None:
    assert (
        a.id,
        a.text,
        a.source,
        a.page,
        a.start,
        a.end,
        a.chunk_index,
        a.section_index,
        a.model,
    ) == (
        b.id,
        b.text,
        b.source,
        b.page,
        b.start,
        b.end,
        b.chunk_index,
        b.section_index,
        b.model,
    )
    assert tuple(a.headings) == tuple(b.headings)
    assert dict(a.metadata) == dict(b.metadata)
    np.testing.assert_array_equal(
        np.asarray(a.embedding.as_dense(), np.float32), b.embedding.as_dense()
    )


def test_parquet_folder_round_trip(tmp_path: Path) -> None:
    records = make_records(unit_rows(250, DIM))
    sink = open_store(f"parquet:{tmp_path / 'out'}", "docs", dim=DIM)
    assert isinstance(sink, ParquetSink)
    sink.upsert(records[:100])
    sink.upsert(records[100:])
    sink.close()
    parts = sorted((tmp_path / "out" / "docs").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet"]
    table = pq.read_table(parts[0])
    assert table.num_rows == 250
    assert table.schema.field("vector").type.list_size == DIM
    assert table.column("id").to_pylist() == [r.id for r in records]
    first = table.slice(0, 1).to_pylist()[0]
    assert json.loads(first["metadata"]) == dict(records[0].metadata)
    assert first["deleted"] is False
    # Re-opening appends a new part; records() replays the log, last row per id wins.
    again = ParquetSink.open(f"parquet:{tmp_path / 'out'}", "docs")
    changed = Record(
        **{**{f: getattr(records[3], f) for f in Record.__dataclass_fields__}, "text": "v2"}
    )
    again.upsert([changed])
    again.flush()
    assert (tmp_path / "out" / "docs" / "part-00001.parquet").is_file()
    replayed = list(again.records())
    assert len(replayed) == 250 and again.count() == 250
    by_id = {r.id: r for r in replayed}
    assert by_id[records[3].id].text == "v2"
    _same(by_id[records[10].id], records[10])
    again.close()


def test_parquet_rolls_parts_and_deletes_with_tombstones(tmp_path: Path) -> None:
    records = make_records(unit_rows(100, DIM))
    with ParquetSink.open(str(tmp_path), "docs", dim=DIM, rows_per_file=40) as sink:
        for start in range(0, 100, 20):
            sink.upsert(records[start : start + 20])
        assert len(list((tmp_path / "docs").glob("part-*.parquet"))) == 2  # 40 + 40 done
        removed = sink.delete(source="a.txt")
        assert removed == len([r for r in records if r.source == "a.txt"])
        assert sink.delete(ids=["r1", "nope"]) == 1
        assert sink.ids(source="a.txt") == set()
        assert sink.count() == 100 - removed - 1
    parts = sorted((tmp_path / "docs").glob("part-*.parquet"))
    rows = [row for p in parts for row in pq.read_table(p).to_pylist()]
    tombstones = [r for r in rows if r["deleted"]]
    assert len(tombstones) == removed + 1
    assert all(t["vector"] is None for t in tombstones)


def test_parquet_single_file(tmp_path: Path) -> None:
    target = tmp_path / "all.parquet"
    records = make_records(unit_rows(30, DIM))
    sink = open_store(f"parquet:{target}", "ignored", dim=DIM)
    sink.upsert(records[:10])
    assert not target.exists()  # Parquet has one footer: the file appears complete on close
    with pytest.raises(StoreError, match="before close"):
        sink.ids()
    sink.upsert(records[10:])
    sink.close()
    assert pq.read_table(target).num_rows == 30
    with pytest.raises(StoreError, match="exists"):
        open_store(f"parquet:{target}", dim=DIM)


def test_killed_part_is_discarded(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "part-00003.parquet.tmp").write_bytes(b"half a file")
    (folder / "part-00002.parquet").write_bytes(b"")
    sink = ParquetSink.open(str(tmp_path), "docs", dim=DIM)
    assert not (folder / "part-00003.parquet.tmp").exists()
    sink.upsert(make_records(unit_rows(2, DIM)))
    sink._finish_part()
    assert (folder / "part-00003.parquet").is_file()  # numbering continues after the last part
    (folder / "part-00002.parquet").unlink()
    sink.close()


def test_jsonl_round_trip_and_torn_line(tmp_path: Path) -> None:
    records = make_records(unit_rows(20, DIM))
    sink = open_store(f"jsonl:{tmp_path}", "docs", dim=DIM)
    assert isinstance(sink, JSONLSink)
    sink.upsert(records[:15])
    sink.upsert(records[10:])  # 5 repeats: appended, deduplicated by readers
    assert sink.delete(ids=["r0"]) == 1
    sink.close()
    path = tmp_path / "docs.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 26
    assert lines[-1] == {"id": "r0", "source": "a.txt", "deleted": True}
    assert lines[0]["vector"] == pytest.approx(records[0].embedding.as_dense().tolist())
    # A run killed mid-write leaves a torn last line: the next writer removes it and goes on.
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "torn", "vec')
    again = JSONLSink.open(f"jsonl:{path}", dim=DIM)
    again.upsert(records[:1])
    replayed = {r.id: r for r in again.records()}
    again.close()
    assert set(replayed) == {r.id for r in records}
    _same(replayed["r7"], records[7])
    assert path.read_text(encoding="utf-8").count("torn") == 0


def _sectioned(records: list[Record], first: int) -> list[Record]:
    return [replace(r, section_index=first + i) for i, r in enumerate(records)]


def test_parquet_keeps_section_index_and_reads_older_parts_as_section_0(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    old = make_records(unit_rows(4, DIM))
    # A part written before section_index existed: today's columns but that one.
    layout = records_table(old, DIM, json_metadata=False).drop_columns(["section_index"])
    pq.write_table(layout, folder / "part-00000.parquet")
    new = _sectioned(make_records(unit_rows(3, DIM, seed=1), prefix="n"), 20)
    with ParquetSink.open(str(tmp_path), "docs", dim=DIM) as sink:
        sink.upsert(new)
        sink.flush()
        got = {r.id: r for r in sink.records()}
    assert {i: r.section_index for i, r in got.items()} == {
        **{r.id: 0 for r in old},
        **{r.id: r.section_index for r in new},
    }
    for r in [*old, *new]:
        _same(got[r.id], r)
    part = pq.read_table(folder / "part-00001.parquet")
    assert part.schema.field("section_index").type == pa.int32()
    assert part.column("section_index").to_pylist() == [20, 21, 22]


def test_jsonl_keeps_section_index_and_reads_older_lines_as_section_0(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    old = make_records(unit_rows(3, DIM))
    lines = []
    for r in old:  # lines written before section_index existed
        line = {**record_dict(r), "deleted": False}
        del line["section_index"]
        lines.append(json.dumps(line) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    new = _sectioned(make_records(unit_rows(2, DIM, seed=2), prefix="n"), 5)
    with JSONLSink.open(f"jsonl:{path}", dim=DIM) as sink:
        sink.upsert(new)
        got = {r.id: r for r in sink.records()}
    assert {i: r.section_index for i, r in got.items()} == {
        **{r.id: 0 for r in old},
        **{r.id: r.section_index for r in new},
    }
    for r in [*old, *new]:
        _same(got[r.id], r)
    written = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line.get("section_index") for line in written] == [None, None, None, 5, 6]


def test_sinks_cannot_be_searched_and_check_vectors(tmp_path: Path) -> None:
    for uri in (f"jsonl:{tmp_path / 'j'}", f"parquet:{tmp_path / 'p'}"):
        sink = open_store(uri, "docs", dim=DIM)
        with pytest.raises(StoreError, match="cannot be searched"):
            sink.search(unit_rows(1, DIM)[0])
        with pytest.raises(StoreError, match="cannot be searched"):
            sink.range_search(unit_rows(1, DIM)[0], 0.1)
        bad = make_records(np.full((1, DIM), np.nan, np.float32), prefix="bad")
        with pytest.raises(RecordRejectedError):
            sink.upsert(bad + make_records(unit_rows(2, DIM)))
        assert sink.ids() == {"r0", "r1"}
        with pytest.raises(ConfigError, match="refusing"):
            sink.delete()
        sink.close()
        with pytest.raises(StoreError, match="closed"):
            sink.upsert(make_records(unit_rows(1, DIM)))
    with pytest.raises(ConfigError, match="unknown parquet options"):
        open_store(f"parquet:{tmp_path / 'p'}", "docs", rows=3)


def test_dim_is_learned_from_the_first_record(tmp_path: Path) -> None:
    with ParquetSink.open(str(tmp_path), "docs") as sink:
        sink.upsert(make_records(unit_rows(3, 5)))
        with pytest.raises(RecordRejectedError, match="rejected"):
            sink.upsert(make_records(unit_rows(1, 6), prefix="x"))
    table = pq.read_table(tmp_path / "docs" / "part-00000.parquet")
    assert table.schema.field("vector").type.list_size == 5


_SECOND = textwrap.dedent(
    """
    import sys
    from vectorstream.errors import StoreLockedError
    from vectorstream.stores import open_store
    try:
        open_store(sys.argv[1], "docs", dim=8)
    except StoreLockedError as exc:
        print("LOCKED", exc)
    """
)


def test_second_sink_writer_is_refused(tmp_path: Path) -> None:
    uri = f"jsonl:{tmp_path}"
    sink = open_store(uri, "docs", dim=DIM)
    child = subprocess.run(
        [sys.executable, "-c", _SECOND, uri], capture_output=True, text=True, timeout=120
    )
    assert "LOCKED" in child.stdout, child.stderr
    with pytest.raises(StoreLockedError):
        open_store(uri, "docs", dim=DIM)
    sink.close()


@pytest.mark.parametrize("scheme", ["parquet", "jsonl"])
def test_modes(tmp_path: Path, scheme: str) -> None:
    uri = f"{scheme}:{tmp_path}"
    records = make_records(unit_rows(5, DIM))
    with open_store(uri, "docs", dim=DIM, mode="w") as writer:  # what the pipeline passes
        writer.upsert(records)
        writer.flush()
        # A reader needs no lock, so it opens while the writer works, and cannot write.
        reader = open_store(uri, "docs", mode="r")
        assert reader.ids() == {r.id for r in records}
        with pytest.raises(StoreError, match="read-only"):
            reader.upsert(records)
        reader.close()
    assert {r.id for r in open_store(uri, "docs", mode="r").records()} == {r.id for r in records}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="mode must be"):
        open_store(uri, "docs", mode="rw")


def test_failed_open_releases_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "x.parquet"
    target.write_bytes(b"")
    with pytest.raises(StoreError, match="exists"):
        open_store(f"parquet:{target}", dim=DIM)
    target.unlink()
    open_store(f"parquet:{target}", dim=DIM).close()  # not locked by the failed attempt


def test_every_adapter_here_satisfies_the_protocol(tmp_path: Path) -> None:
    from vectorstream.stores import VectorStore

    for uri in (
        f"lancedb://{tmp_path / 'l'}",
        f"parquet:{tmp_path / 'p'}",
        f"jsonl:{tmp_path / 'j'}",
    ):
        store = open_store(uri, "docs", dim=DIM)
        assert isinstance(store, VectorStore), uri
        assert "dense" in store.capabilities.kinds
        assert (store.uri, store.collection) == (uri, "docs")
        store.close()


@pytest.mark.parametrize(
    ("uri", "beside"),
    [
        ("parquet:{tmp}/out", "out/docs.vs-manifest.sqlite"),
        ("parquet:{tmp}/all.parquet", "all.parquet.vs-manifest.sqlite"),
        ("jsonl:{tmp}", "docs.jsonl.vs-manifest.sqlite"),
    ],
)
def test_side_tables_live_beside_the_output(tmp_path: Path, uri: str, beside: str) -> None:
    uri = uri.format(tmp=tmp_path)
    writer = open_store(uri, "docs", dim=DIM, mode="w")
    # A reader before the side table exists sees it empty, and never writes to it.
    early = open_store(uri, "docs", mode="r")
    assert early.side_table("manifest").get_many(["k"]) == {}
    assert list(early.side_table("manifest").scan()) == []
    if not uri.endswith(".parquet"):  # a single Parquet file cannot be read before close
        writer.upsert(make_records(unit_rows(5, DIM)))
    check_side_table(writer)
    writer.side_table("manifest").put_many({"/a.txt": {"state": "done", "chunks": 2}})
    assert (tmp_path / beside).is_file()
    # A reader opens while the writer holds its lock, and reads the writer's rows.
    reader = open_store(uri, "docs", mode="r")
    assert reader.side_table("manifest").get_many(["/a.txt"]) == {
        "/a.txt": {"state": "done", "chunks": 2}
    }
    assert dict(early.side_table("manifest").scan()) == {"/a.txt": {"state": "done", "chunks": 2}}
    with pytest.raises(StoreError, match="read-only"):
        reader.side_table("manifest").put_many({"/b.txt": {}})
    with pytest.raises(ConfigError, match="side table names"):
        writer.side_table("../escape")
    for store in (early, reader, writer):
        store.close()
    with pytest.raises(StoreError, match="closed"):
        writer.side_table("manifest")
    # The manifest outlives the writer: whoever opens the files next finds it with them.
    with open_store(uri, "docs", mode="r") as again:
        assert again.side_table("manifest").get_many(["/a.txt"]) == {
            "/a.txt": {"state": "done", "chunks": 2}
        }


@pytest.mark.parametrize("uri", ["parquet:{p}/out", "jsonl:{p}"])
def test_sinks_satisfy_the_write_contract(tmp_path: Path, uri: str) -> None:
    store = open_store(uri.format(p=tmp_path), "documents", mode="w")
    try:
        check_write_contract(store)
    finally:
        store.close()
