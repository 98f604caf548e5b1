"""The embedded LanceDB store against real LanceDB tables in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _servers_support import check_contract, check_side_table
from _store_support import exact_topk, make_records, unit_rows
from vectorstream.errors import (
    ConfigError,
    RecordRejectedError,
    StoreError,
    StoreLockedError,
)
from vectorstream.stores import dipr_cut, open_store
from vectorstream.stores._records import records_table
from vectorstream.stores.lancedb import LanceDBStore, list_collections, path_of, translate_where
from vectorstream.types import Embedding, Hit, Record

DIM = 16


@pytest.fixture(params=["memory", "lancedb"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LanceDBStore]:
    # Every test runs with the in-memory search path (small tables' default) and without it.
    options = {} if request.param == "memory" else {"memory_search_bytes": 0}
    s = open_store(f"lancedb://{tmp_path / 'db'}", "docs", dim=DIM, **options)
    assert isinstance(s, LanceDBStore)
    yield s
    s.close()


def _ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


# -- URIs and opening ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("lancedb://./x", "x"),
        ("lancedb:///abs/db", "/abs/db"),
        ("lancedb:rel/db", "rel/db"),
        ("some/path", "some/path"),
        ("lancedb://", ".vectorstream"),
    ],
)
def test_uri_to_path(uri: str, expected: str) -> None:
    assert path_of(uri) == Path(expected)


def test_dim_mismatch_names_both_dims(tmp_path: Path) -> None:
    open_store(str(tmp_path), "docs", dim=DIM).close()
    with pytest.raises(ConfigError, match=r"16-dimensional.*gives 8"):
        open_store(str(tmp_path), "docs", dim=8)
    # The same dim, or none, opens the existing table.
    again = open_store(str(tmp_path), "docs", mode="r")
    assert again.dim == DIM
    again.close()


def test_missing_collection_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no LanceDB store at"):
        open_store(str(tmp_path / "none"), "docs", mode="r")
    assert not (tmp_path / "none").exists()  # a reader creates nothing
    open_store(str(tmp_path), "docs", dim=DIM).close()
    with pytest.raises(StoreError, match="'other' does not exist"):
        open_store(str(tmp_path), "other")
    with pytest.raises(ConfigError, match="unknown LanceDB options"):
        open_store(str(tmp_path), "docs", dim=DIM, nprobe=3)
    with pytest.raises(ConfigError, match="collection name"):
        open_store(str(tmp_path), "../escape", dim=DIM)


def test_vendor_errors_are_translated(tmp_path: Path) -> None:
    # A table whose vector column is not a fixed-size list: not ours, and said so.
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(tmp_path))
    db.create_table("alien", pa.table({"id": ["x"], "vector": ["not a vector"]}))
    with pytest.raises(StoreError, match="not written by vectorstream"):
        open_store(str(tmp_path), "alien", mode="r")
    # A LanceDB failure inside an operation arrives as StoreError raised from the original.
    s = open_store(str(tmp_path), "docs", dim=DIM)
    s._table.drop_columns(["page"])  # sabotage the schema underneath the store
    with pytest.raises(StoreError) as info:
        s.upsert(make_records(unit_rows(3, DIM)))
    assert info.value.__cause__ is not None
    s.close()


# -- writes -------------------------------------------------------------------------------------


def test_upsert_is_idempotent(store: LanceDBStore) -> None:
    records = make_records(unit_rows(300, DIM))
    store.upsert(records)
    store.upsert(records)
    store.upsert(records[:100])
    assert store.count() == 300
    assert store.ids() == {r.id for r in records}
    # Replacing a record by id changes it in place.
    changed = Record(**{**_as_kwargs(records[5]), "text": "replaced"})
    store.upsert([changed])
    assert store.count() == 300
    hit = store.search(records[5].embedding.as_dense(), 1)[0]
    assert (hit.id, hit.text) == (records[5].id, "replaced")


def _as_kwargs(r: Record) -> dict[str, object]:
    return {f: getattr(r, f) for f in Record.__dataclass_fields__}


def test_one_upsert_is_one_version(store: LanceDBStore) -> None:
    v0 = store.version
    store.upsert(make_records(unit_rows(5000, DIM)))
    assert store.version == v0 + 1
    # A merge of 5,000 rows (2,500 existing, 2,500 new) is one more commit, not thousands.
    more = make_records(unit_rows(5000, DIM, seed=1))[2500:] + make_records(
        unit_rows(2500, DIM, seed=2), prefix="new"
    )
    store.upsert(more)
    assert store.version == v0 + 2
    assert store.count() == 7500


def test_duplicate_ids_in_one_batch_keep_the_last(store: LanceDBStore) -> None:
    records = make_records(unit_rows(3, DIM))
    dup = Record(**{**_as_kwargs(records[0]), "text": "second"})
    store.upsert([records[0], records[1], dup])
    assert store.count() == 2
    store.upsert([records[0], dup, records[2]])  # the merge path too
    assert store.count() == 3
    assert store.search(records[0].embedding.as_dense(), 1)[0].text == "second"


def test_bad_vectors_are_rejected_and_neighbours_written(store: LanceDBStore) -> None:
    records = make_records(unit_rows(4, DIM))
    nan_vector = Embedding(dense=np.full(DIM, np.nan, np.float32))
    nan = Record(**{**_as_kwargs(records[1]), "embedding": nan_vector})
    short_vector = Embedding(dense=np.ones(DIM - 1, np.float32))
    short = Record(**{**_as_kwargs(records[2]), "embedding": short_vector})
    with pytest.raises(RecordRejectedError) as info:
        store.upsert([records[0], nan, short, records[3]])
    assert set(info.value.rejected) == {records[1].id, records[2].id}
    assert "NaN" in info.value.rejected[records[1].id]
    assert store.ids() == {records[0].id, records[3].id}


def test_delete_by_source_and_ids(store: LanceDBStore) -> None:
    records = make_records(unit_rows(30, DIM), sources=("a.txt", "b'quote.md", "c.pdf"))
    store.upsert(records)
    in_b = {r.id for r in records if r.source == "b'quote.md"}
    assert store.ids(source="b'quote.md") == in_b
    assert store.delete(source="b'quote.md") == len(in_b)
    assert store.ids(source="b'quote.md") == set()
    assert store.delete(ids=["r0", "r3", "missing"]) == 2
    assert store.count() == 30 - len(in_b) - 2
    # Both given: only rows matching both go.
    assert store.delete(ids=["r6", "r8"], source="c.pdf") == 1
    assert "r6" in store.ids() and "r8" not in store.ids()
    with pytest.raises(ConfigError, match="refusing to delete everything"):
        store.delete()
    assert store.delete(ids=[]) == 0


def test_read_only_store_refuses_writes(store: LanceDBStore, tmp_path: Path) -> None:
    reader = open_store(f"lancedb://{tmp_path / 'db'}", "docs", mode="r")
    with pytest.raises(StoreError, match="read-only"):
        reader.upsert(make_records(unit_rows(1, DIM)))
    reader.close()


def test_optimize_compacts_and_indexes(tmp_path: Path) -> None:
    s = open_store(
        str(tmp_path), "docs", dim=DIM, scalar_index_threshold=100, cleanup_older_than=0.001
    )
    vectors = unit_rows(400, DIM)
    records = make_records(vectors)
    for start in range(0, 400, 50):
        s.upsert(records[start : start + 50])
    report = s.optimize()
    assert report.rows == 400
    assert report.versions_before >= 9
    assert report.versions_after == 1
    assert report.vector_index_built is False  # below index_threshold
    assert set(report.scalar_indexes_built) == {"id", "source"}
    # Still correct after compaction and indexing; merges and deletes use the indexes.
    s.upsert(records[:10])
    assert s.count() == 400
    assert s.delete(source="a.txt") == len([r for r in records if r.source == "a.txt"])
    assert _ids(s.search(vectors[1], 1)) == ["r1"]
    assert s.optimize().scalar_indexes_built == ()
    s.close()


# -- search ------------------------------------------------------------------------------------


def test_topk_equals_exact_cosine(store: LanceDBStore) -> None:
    vectors = unit_rows(2000, DIM)
    records = make_records(vectors)
    store.upsert(records)
    for q in unit_rows(5, DIM, seed=9):
        hits = store.search(q, 10)
        expected = exact_topk(records, q, 10)
        assert _ids(hits) == [i for i, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
    hit = store.search(vectors[7], 1)[0]
    assert hit.id == "r7" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert (hit.source, hit.page, hit.start, hit.end) == (
        records[7].source,
        records[7].page,
        70,
        79,
    )
    assert hit.headings == ("Title", "Part 1")
    assert hit.metadata == {"lang": "en", "n": 1, "flag": True}


def test_search_edge_cases(store: LanceDBStore) -> None:
    assert store.search(unit_rows(1, DIM)[0], 5) == []  # empty table
    store.upsert(make_records(unit_rows(3, DIM)))
    assert len(store.search(unit_rows(1, DIM)[0], 10)) == 3
    with pytest.raises(ConfigError, match="k must be"):
        store.search(unit_rows(1, DIM)[0], 0)
    with pytest.raises(ConfigError, match="dimension 17"):
        store.search(np.ones(DIM + 1, np.float32))
    with pytest.raises(ConfigError, match="all zeros"):
        store.search(np.zeros(DIM, np.float32))
    with pytest.raises(ConfigError, match="limit must be"):
        store.range_search(unit_rows(1, DIM)[0], 0.1, limit=0)


FILTERS: list[dict[str, object]] = [
    {"source": "b.md"},
    {"source": ["a.txt", "c.pdf"]},
    {"page": 2},
    {"page": [0, 3]},
    {"page": "2"},  # a string never equals an int page
    {"chunk_index": [5, 6, 7, 500]},
    {"model": "fake-model", "source": "a.txt"},
    {"metadata.lang": "fr"},
    {"metadata.n": 2},
    {"metadata.n": [0, 2.0]},
    {"metadata.flag": True},
    {"metadata.lang": "en", "page": [1, 2], "source": "c.pdf"},
    {"metadata.missing": "x"},
    {"source": "x' OR '1'='1"},  # an injection attempt is just a value
    {"source": []},
]


@pytest.mark.parametrize("where", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_match_the_reference(store: LanceDBStore, where: dict[str, object]) -> None:
    records = make_records(unit_rows(600, DIM))
    store.upsert(records)
    q = unit_rows(1, DIM, seed=3)[0]
    hits = store.search(q, 15, where=where)
    expected = exact_topk(records, q, 15, where)
    assert _ids(hits) == [i for i, _ in expected]


def test_metadata_filters_on_awkward_values(store: LanceDBStore) -> None:
    base = make_records(unit_rows(8, DIM))
    metas: list[dict[str, object]] = [
        {"k": 'quote " and \\ back'},
        {"k": {"nested": 1}},
        {"k": [1, 2]},
        {"k": 1},
        {"k": True},
        {"k": "1"},
        {"odd'key": "v", "a.b": "dot"},
        {"k": 1e300},
    ]
    records = [Record(**{**_as_kwargs(r), "metadata": m}) for r, m in zip(base, metas, strict=True)]
    store.upsert(records)
    q = unit_rows(1, DIM, seed=4)[0]
    for where in (
        {"metadata.k": 'quote " and \\ back'},
        {"metadata.k": 1},  # 1 == True in Python's equality, which `matches` defines
        {"metadata.k": "1"},
        {"metadata.k": True},
        {"metadata.odd'key": "v"},
        {"metadata.a.b": "dot"},
        {"metadata.k": 1e300},
    ):
        assert _ids(store.search(q, 8, where=where)) == [
            i for i, _ in exact_topk(records, q, 8, where)
        ], where


def test_translate_where_quotes_values() -> None:
    pred = translate_where({"source": "it's", "page": [1, 2], "metadata.lang": "en"})
    assert pred.sql == (
        "source = 'it''s' AND page IN (1, 2) AND "
        "json_extract(metadata, '$[\"lang\"]') IN ('\"en\"')"
    )
    assert pred.post == {"metadata.lang": "en"}
    assert translate_where(None).sql is None
    with pytest.raises(ConfigError):
        translate_where({"text": "x"})


def test_range_search_is_dipr(store: LanceDBStore) -> None:
    vectors = unit_rows(3000, DIM)
    records = make_records(vectors)
    store.upsert(records)
    q = unit_rows(1, DIM, seed=11)[0]
    everything = exact_topk(records, q, 3000)
    best = everything[0][1]
    for beta in (0.0, 0.05, 0.3, 0.6):  # 0.6 reaches past the first page of 64
        expected = [i for i, s in everything if s >= best - beta]
        hits = store.range_search(q, beta)
        assert set(_ids(hits)) == set(expected[:1000]) or len(expected) > 1000
        assert _ids(hits) == expected[: len(hits)]
        assert all(h.score >= best - beta - 1e-6 for h in hits)
    wide = store.range_search(q, 2.0, limit=50)
    assert _ids(wide) == [i for i, _ in everything[:50]]
    where = {"source": "b.md"}
    filtered = store.range_search(q, 0.3, where=where)
    in_b = exact_topk(records, q, 3000, where)
    assert _ids(filtered) == [i for i, s in in_b if s >= in_b[0][1] - 0.3]
    with pytest.raises(ConfigError):
        store.range_search(q, -0.1)


def test_ann_index_recall(tmp_path: Path) -> None:
    dim = 384
    vectors = unit_rows(10_000, dim, seed=5)
    records = make_records(vectors)
    # Memory search off: this is about searches through the ANN index.
    s = open_store(str(tmp_path), "docs", dim=dim, index_threshold=1000, memory_search_bytes=0)
    s.upsert(records)
    report = s.optimize()
    assert report.vector_index_built and s.has_vector_index()
    queries = unit_rows(30, dim, seed=6)
    recalls = []
    for q in queries:
        hits = s.search(q, 10)
        exact = {i for i, _ in exact_topk(records, q, 10)}
        recalls.append(len(exact & set(_ids(hits))) / 10)
        # Through the index, scores are still exact cosine similarities.
        np.testing.assert_allclose(
            [h.score for h in hits], [float(vectors[int(h.id[1:])] @ q) for h in hits], atol=1e-5
        )
    assert np.mean(recalls) >= 0.95
    # DIPR through the index matches the flat answer on the rows it returns.
    hits = s.range_search(queries[0], 0.1, limit=100)
    best = hits[0].score
    assert hits and all(h.score >= best - 0.1 - 1e-6 for h in hits)
    s.close()


def test_dipr_cut_agrees_with_range_search(store: LanceDBStore) -> None:
    records = make_records(unit_rows(500, DIM))
    store.upsert(records)
    q = unit_rows(1, DIM, seed=8)[0]
    assert _ids(store.range_search(q, 0.2, limit=500)) == _ids(dipr_cut(store.search(q, 500), 0.2))


def test_models_lists_the_model_column(store: LanceDBStore) -> None:
    store.upsert(make_records(unit_rows(5, DIM), model="m1"))
    assert store.models() == {"m1"}
    store.upsert(make_records(unit_rows(5, DIM), prefix="x", model="m2"))
    assert store.models() == {"m1", "m2"}  # own writes clear the cache


def test_reader_sees_another_writers_models(store: LanceDBStore, tmp_path: Path) -> None:
    store.upsert(make_records(unit_rows(5, DIM), model="m1"))
    reader = open_store(f"lancedb://{tmp_path / 'db'}", "docs", mode="r", refresh_interval=0)
    assert reader.models() == {"m1"}  # type: ignore[attr-defined]
    store.upsert(make_records(unit_rows(5, DIM), prefix="x", model="m2"))
    assert reader.count() == 10  # a reader with refresh_interval=0 sees every commit
    time.sleep(1.1)  # models() asks the table version at most once a second
    assert reader.models() == {"m1", "m2"}  # type: ignore[attr-defined]
    reader.close()


# -- the writer lock ---------------------------------------------------------------------------

_SECOND_WRITER = textwrap.dedent(
    """
    import sys
    from vectorstream.errors import StoreLockedError
    from vectorstream.stores import open_store
    try:
        open_store(sys.argv[1], "docs", dim=16)
    except StoreLockedError as exc:
        print("LOCKED", exc)
        # A reader in another process reads the side table while the writer holds the lock.
        reader = open_store(sys.argv[1], "docs", mode="r")
        print("SIDE", dict(reader.side_table("manifest").scan()))
        sys.exit(0)
    print("NOT LOCKED")
    sys.exit(1)
    """
)


def test_second_writer_fails_fast_while_readers_work(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path}"
    writer = open_store(uri, "docs", dim=DIM)
    records = make_records(unit_rows(50, DIM))
    writer.upsert(records)
    writer.side_table("manifest").put_many({"/x.txt": {"chunks": 3}})
    child = subprocess.run(
        [sys.executable, "-c", _SECOND_WRITER, uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert "LOCKED" in child.stdout and "mode='r'" in child.stdout
    assert "SIDE {'/x.txt': {'chunks': 3}}" in child.stdout
    # A reader opens and searches while the writer holds the lock, and sees its commits.
    reader = open_store(uri, "docs", mode="r")
    assert _ids(reader.search(records[3].embedding.as_dense(), 1)) == ["r3"]
    reader.close()
    # In-process too: a second writer handle is refused; after close() the lock is free.
    with pytest.raises(StoreLockedError, match=r"process \d+ is already writing"):
        open_store(uri, "docs", dim=DIM)
    writer.close()
    open_store(uri, "docs", dim=DIM, mode="w").close()


def test_auto_mode_locks_on_first_write(tmp_path: Path) -> None:
    uri = str(tmp_path)
    open_store(uri, "docs", dim=DIM).close()
    lazy = open_store(uri, "docs")  # no dim, no mode: a reader until it writes
    other = open_store(uri, "docs", dim=DIM)  # so a writer can still open
    with pytest.raises(StoreLockedError):
        lazy.upsert(make_records(unit_rows(1, DIM)))
    other.close()
    lazy.upsert(make_records(unit_rows(1, DIM)))
    assert lazy.count() == 1
    lazy.close()


def test_sync_fallback_gives_the_same_answers(
    store: LanceDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vectorstream.stores._lance_search as module

    records = make_records(unit_rows(300, DIM))
    store.upsert(records)
    q = unit_rows(1, DIM, seed=12)[0]
    where = {"source": "a.txt", "metadata.lang": "en"}
    fast = (store.search(q, 7, where), store.range_search(q, 0.4, where=where))
    assert module._ONE_HOP is not None  # the one-hop path is what ran above
    monkeypatch.setattr(module, "_ONE_HOP", None)
    slow = (store.search(q, 7, where), store.range_search(q, 0.4, where=where))
    assert fast == slow
    assert _ids(fast[0]) == [i for i, _ in exact_topk(records, q, 7, where)]


# -- property: the SQL translation agrees with the reference `matches` ---------------------------

_POOL: list[object] = [
    "en",
    "it's",
    'q"uote',
    "back\\slash",
    "",
    "1",
    0,
    1,
    2,
    2.5,
    -0.5,
    True,
    False,
]


@pytest.fixture(scope="module")
def mixed_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LanceDBStore, list[Record]]]:
    import random

    rng = random.Random(0)
    base = make_records(unit_rows(60, DIM, seed=21))
    records = []
    for r in base:
        meta: dict[str, object] = {}
        for key in ("a", "b", "c.d"):
            roll = rng.random()
            if roll < 0.7:
                meta[key] = rng.choice(_POOL)
            elif roll < 0.8:
                meta[key] = None
            elif roll < 0.9:
                meta[key] = {"nested": rng.choice(_POOL)}
        records.append(Record(**{**_as_kwargs(r), "metadata": meta}))
    s = open_store(str(tmp_path_factory.mktemp("mixed")), "docs", dim=DIM)
    s.upsert(records)
    yield s, records  # type: ignore[misc]
    s.close()


@given(
    key=st.sampled_from(
        ["metadata.a", "metadata.b", "metadata.c.d", "page", "source", "chunk_index"]
    ),
    values=st.lists(st.sampled_from([*_POOL, "a.txt", "b.md", 3, 3.0]), min_size=1, max_size=3),
    as_list=st.booleans(),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_filter_translation_agrees_with_matches(
    mixed_store: tuple[LanceDBStore, list[Record]], key: str, values: list[object], as_list: bool
) -> None:
    store, records = mixed_store
    where = {key: values if as_list else values[0]}
    q = unit_rows(1, DIM, seed=22)[0]
    got = {h.id for h in store.search(q, 100, where=where)}
    expected = {i for i, _ in exact_topk(records, q, 100, where)}
    assert got == expected, where


_BUSY_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from _store_support import make_records, unit_rows
    from vectorstream.stores import open_store
    store = open_store(sys.argv[1], "docs", dim=16)
    print("ready", flush=True)
    for batch in range(int(sys.argv[3])):
        store.upsert(make_records(unit_rows(200, 16, seed=batch), prefix=f"b{batch}-"))
    print("done", flush=True)
    time.sleep(float(sys.argv[4]))
    """
)


def _start_writer(uri: str, batches: int, linger: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _BUSY_WRITER,
            uri,
            str(Path(__file__).parent),
            str(batches),
            str(linger),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_readers_never_block_on_a_busy_writer(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path}"
    proc = _start_writer(uri, batches=15, linger=0)
    reader = open_store(uri, "docs", mode="r", refresh_interval=0)
    counts = []
    while proc.poll() is None:
        counts.append(reader.count())
        hits = reader.search(unit_rows(1, DIM, seed=99)[0], 5)
        assert min(5, counts[-1]) <= len(hits) <= 5  # a commit may land between the two
    assert proc.wait(timeout=60) == 0
    assert len(set(counts)) >= 2  # the reader really ran while the writer committed
    assert counts == sorted(counts)  # each commit is seen whole, in order
    assert counts[-1] % 200 == 0 and reader.count() == 15 * 200
    reader.close()


def test_a_killed_writer_leaves_no_lock(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path}"
    proc = _start_writer(uri, batches=1, linger=60)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
    with pytest.raises(StoreLockedError, match=f"process {proc.pid}"):
        open_store(uri, "docs", dim=DIM)
    proc.kill()  # SIGKILL: no cleanup code runs in the writer
    proc.wait(timeout=30)
    with open_store(uri, "docs", dim=DIM) as store:  # the kernel dropped the flock
        assert store.count() == 200


# -- the shared contracts, side tables -----------------------------------------------------------


def test_contract(store: LanceDBStore) -> None:
    check_contract(store, dim=DIM)


# -- collections made before section_index existed ----------------------------------------------


def _old_table(path: Path, name: str, records: list[Record]) -> None:
    """A collection as the previous version made it: today's columns but ``section_index``."""
    import lancedb

    data = records_table(records, DIM).drop_columns(["section_index"])
    lancedb.connect(str(path)).create_table(name, schema=data.schema).add(data)


def _columns(path: Path, name: str) -> list[str]:
    import lancedb

    return list(lancedb.connect(str(path)).open_table(name).schema.names)


def _sectioned(records: list[Record], first: int) -> list[Record]:
    return [replace(r, section_index=first + i) for i, r in enumerate(records)]


@pytest.mark.parametrize("memory", [True, False])
def test_a_table_made_before_section_index_is_read_and_upgraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: bool
) -> None:
    import vectorstream.stores._lance_reads as lance_reads
    import vectorstream.stores.lancedb as lancedb_store

    # Readers look again at every query, for the models and for the section_index column.
    monkeypatch.setattr(lancedb_store, "_MODELS_TTL", 0.0)
    monkeypatch.setattr(lance_reads, "SECTION_CHECK_TTL", 0.0)
    options = {} if memory else {"memory_search_bytes": 0}
    path = tmp_path / "db"
    old = make_records(unit_rows(6, DIM))
    _old_table(path, "docs", old)
    q = old[2].embedding.as_dense()
    reader = open_store(f"lancedb://{path}", "docs", mode="r", refresh_interval=0, **options)
    hits = reader.search(q, k=6)
    assert hits[0].id == old[2].id and {h.section_index for h in hits} == {0}
    assert {h.section_index for h in reader.range_search(q, 2.0, limit=6)} == {0}
    assert "section_index" not in _columns(path, "docs")  # a reader alters nothing
    writer = open_store(f"lancedb://{path}", "docs", mode="w", **options)
    assert "section_index" in _columns(path, "docs")  # added when opened for writing
    new = _sectioned(make_records(unit_rows(3, DIM, seed=1), prefix="n"), 10)
    writer.upsert(new)
    want = {**{r.id: 0 for r in old}, **{r.id: r.section_index for r in new}}
    assert {h.id: h.section_index for h in writer.search(q, k=9)} == want
    # The reader, opened on the older table, reads the column once a writer has added it.
    assert {h.id: h.section_index for h in reader.search(q, k=9)} == want
    writer.upsert(_sectioned([old[2]], 4))  # an older row rewritten gets its section
    assert writer.search(q, k=1)[0].section_index == 4
    reader.close()
    writer.close()


def test_auto_mode_adds_section_index_before_its_first_write(tmp_path: Path) -> None:
    path = tmp_path / "db"
    old = make_records(unit_rows(4, DIM))
    _old_table(path, "docs", old)
    store = open_store(f"lancedb://{path}", "docs")  # auto mode: may write, has not yet
    assert [h.section_index for h in store.search(old[0].embedding.as_dense(), k=4)] == [0] * 4
    assert "section_index" not in _columns(path, "docs")
    new = _sectioned(make_records(unit_rows(2, DIM, seed=3), prefix="n"), 7)
    store.upsert(new)
    assert "section_index" in _columns(path, "docs")
    assert store.search(new[1].embedding.as_dense(), k=1)[0].section_index == 8
    assert store.count() == 6
    store.close()


def test_side_table_contract(store: LanceDBStore) -> None:
    store.upsert(make_records(unit_rows(20, DIM)))
    check_side_table(store)


def test_reader_reads_the_side_table_without_the_lock(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path}"
    writer = open_store(uri, "docs", dim=DIM, mode="w")
    # A reader opened before the side table exists sees it empty, and cannot write to it.
    early = open_store(uri, "docs", mode="r", refresh_interval=0)
    assert early.side_table("manifest").get_many(["a"]) == {}
    assert list(early.side_table("manifest").scan()) == []
    with pytest.raises(StoreError, match="read-only"):
        early.side_table("manifest").put_many({"a": {"state": "done"}})
    writer.side_table("manifest").put_many({"a": {"state": "done", "n": 1}, "b": {"n": 2}})
    # The writer holds the lock: a reader that took it would fail with StoreLockedError here.
    reader = open_store(uri, "docs", mode="r")
    assert reader.side_table("manifest").get_many(["a", "zz"]) == {"a": {"state": "done", "n": 1}}
    assert dict(early.side_table("manifest").scan()) == {
        "a": {"state": "done", "n": 1},
        "b": {"n": 2},
    }
    writer.side_table("manifest").delete_many(["a"])
    assert dict(early.side_table("manifest").scan()) == {"b": {"n": 2}}  # refresh_interval=0
    with pytest.raises(StoreError, match="read-only"):
        reader.side_table("manifest").delete_many(["b"])
    early.close()
    reader.close()
    writer.close()


def test_side_tables_are_not_collections(tmp_path: Path) -> None:
    import lancedb

    uri = f"lancedb://{tmp_path}"
    with open_store(uri, "docs", dim=DIM) as store:
        store.side_table("manifest").put_many({"k": {"v": 1}})
    assert "docs__vs_manifest" in lancedb.connect(str(tmp_path)).table_names()  # it is there,
    assert list_collections(uri) == ["docs"]  # but not a collection
    assert list_collections(f"lancedb://{tmp_path / 'none'}") == []
    with pytest.raises(StoreError, match=r"found: \['docs'\]"):
        open_store(uri, "other")
    with pytest.raises(ConfigError, match="side tables"):
        open_store(uri, "docs__vs_manifest", dim=DIM)
    with open_store(uri, "docs") as store, pytest.raises(ConfigError, match="side table names"):
        store.side_table("Bad-Name")


def test_drop_takes_the_side_tables_along(tmp_path: Path) -> None:
    import lancedb

    uri = f"lancedb://{tmp_path}"
    keep = open_store(uri, "keep", dim=DIM)
    keep.side_table("manifest").put_many({"k": {"v": 1}})
    store = open_store(uri, "docs", dim=DIM)
    store.upsert(make_records(unit_rows(5, DIM)))
    store.side_table("manifest").put_many({"k": {"v": 2}})
    store.side_table("other").put_many({"k": {"v": 3}})
    store.drop()
    assert sorted(lancedb.connect(str(tmp_path)).table_names()) == ["keep", "keep__vs_manifest"]
    with pytest.raises(StoreError, match="closed"):
        store.side_table("manifest")
    # The lock was released; a new collection of that name starts empty, side tables too.
    with open_store(uri, "docs", dim=DIM) as fresh:
        assert fresh.count() == 0 and fresh.side_table("manifest").get_many(["k"]) == {}
    assert keep.side_table("manifest").get_many(["k"]) == {"k": {"v": 1}}
    keep.close()


def test_many_small_side_table_writes_are_compacted(tmp_path: Path) -> None:
    from vectorstream.stores._lance_side import COMPACT_EVERY

    assert COMPACT_EVERY >= 16  # the default; a few here to keep the test fast
    store = open_store(str(tmp_path), "docs", dim=DIM, cleanup_older_than=0.001)
    side = store.side_table("manifest")
    side.compact_every = 8  # type: ignore[attr-defined]
    writes = 2 * 8 + 5
    for i in range(writes):  # one source at a time, as the pipeline's manifest writes
        side.put_many({f"/src/{i}.txt": {"state": "pending"}})
    raw = side._table  # type: ignore[attr-defined]
    assert len(raw.list_versions()) <= 8 + 2  # compacted on the way
    assert raw.stats()["fragment_stats"]["num_fragments"] <= 8
    assert store.optimize().rows == 0
    assert raw.stats()["fragment_stats"]["num_fragments"] == 1
    assert len(dict(side.scan())) == writes
    side.put_many({"/src/0.txt": {"state": "done"}})
    store.close()  # compacts what was written since
    assert len(raw.list_versions()) == 1
    with open_store(str(tmp_path), "docs", mode="r") as reader:
        assert reader.side_table("manifest").get_many(["/src/0.txt"]) == {
            "/src/0.txt": {"state": "done"}
        }
