"""LanceDB written by many workers: data files from the workers, one commit by the driver.

Lance lets any process write fragments (data files) into a dataset's folder; they become part
of the table only when a commit lists them. The workers of a Ray run write the records of one
block, one fragment per source (so a source that fails meanwhile is simply left out of the
commit); the driver, which holds the collection's writer lock, appends the fragments of each
commit interval in one transaction. A write retried by Ray leaves either an uncommitted file
(never read) or, when both copies were committed, a duplicate row, which settling removes: it
keeps exactly one row per record id of the run and deletes every other row of the source.

The fragment size is the block's: never Lance's default buffer of a million rows per file.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import StoreUnavailableError
from ..types import Record
from ._common import require
from ._distributed import WriteReceipt
from ._lance_db import translated
from ._lance_filter import sql_in
from ._records import records_to_arrow
from .retry import RetryPolicy

log = logging.getLogger("vectorstream.stores.lancedb")

_ROWS_PER_GROUP = 1024
_DELETE_BATCH = 4096  # row addresses per delete predicate


def _lance() -> Any:
    return require("lance", "pylance", "ray")


@dataclass(frozen=True, slots=True)
class LanceFragmentWriter:
    """The worker side: writes fragments into ``dataset`` (the table's folder)."""

    dataset: str
    dim: int
    kind: str
    schema: pa.Schema

    def write(self, records: Sequence[Record], policy: RetryPolicy) -> list[WriteReceipt]:
        if not records:
            return []
        table, rejected = records_to_arrow(records, self.dim, kind=self.kind)  # type: ignore[arg-type]
        table = table.select(self.schema.names).cast(self.schema)
        sources = table.column("source").to_pylist()
        ids = table.column("id").to_pylist()
        rows: dict[str, list[int]] = defaultdict(list)
        for i, source in enumerate(sources):
            rows[source].append(i)
        source_of = {r.id: r.source for r in records}
        refused: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for rid, why in rejected.items():
            refused[source_of[rid]].append((source_of[rid], rid, why))
        receipts = []
        for source in sorted(set(rows) | set(refused)):
            at = rows.get(source, [])
            fragments = self._write(table.take(at), policy) if at else []
            receipts.append(
                WriteReceipt(
                    tuple((source, ids[i]) for i in at),
                    tuple(refused.get(source, ())),
                    staged=fragments or None,
                )
            )
        return receipts

    def _write(self, table: pa.Table, policy: RetryPolicy) -> list[Any]:
        from lance.fragment import write_fragments

        failures = 0
        started = time.monotonic()
        while True:
            try:
                return list(
                    write_fragments(
                        table,
                        self.dataset,
                        schema=self.schema,
                        max_rows_per_file=max(1, table.num_rows),
                        max_rows_per_group=_ROWS_PER_GROUP,
                    )
                )
            except OSError as exc:  # a shared file system that hiccups
                failures += 1
                if failures >= policy.max_attempts or time.monotonic() - started > policy.deadline:
                    raise StoreUnavailableError(
                        f"cannot write a fragment into {self.dataset}: {exc}"
                    ) from exc
                time.sleep(policy.backoff(failures - 1, random.Random()))


class LanceFragmentWrites:
    """The driver side over an open ``LanceDBStore`` (which holds the writer lock)."""

    def __init__(self, store: Any) -> None:
        lance = _lance()
        self.store = store
        self.dataset = str(store.path / f"{store.collection}.lance")
        with translated(f"open {self.dataset}"):
            schema = lance.dataset(self.dataset).schema
        self.writer = LanceFragmentWriter(self.dataset, store.dim, store.kind, schema)

    def commit(self, staged: Sequence[Any]) -> None:
        fragments = [f for group in staged for f in group]
        if not fragments:
            return
        lance = _lance()
        with translated(f"commit {len(fragments)} fragments"):
            version = lance.dataset(self.dataset).version
            lance.LanceDataset.commit(
                self.dataset, lance.LanceOperation.Append(fragments), read_version=version
            )
        self.store.reload()
        log.debug("committed %d fragments into %s", len(fragments), self.dataset)

    def settle(self, sources: Mapping[str, set[str]]) -> int:
        """Keep one row per id of ``sources[source]``; delete every other row of those sources."""
        if not sources:
            return 0
        lance = _lance()
        with translated("list the rows of finished sources"):
            ds = lance.dataset(self.dataset)
            table = ds.to_table(
                columns=["id", "source"],
                filter=sql_in("source", sorted(sources)),
                with_row_address=True,
            )
        rows = sorted(
            zip(
                table.column("_rowaddr").to_pylist(),
                table.column("source").to_pylist(),
                table.column("id").to_pylist(),
                strict=True,
            ),
            reverse=True,  # the newest copy of a row (highest fragment) is the one kept
        )
        kept: set[tuple[str, str]] = set()
        drop: list[int] = []
        for address, source, rid in rows:
            if rid in sources[source] and (source, rid) not in kept:
                kept.add((source, rid))
            else:
                drop.append(address)
        for start in range(0, len(drop), _DELETE_BATCH):
            part = drop[start : start + _DELETE_BATCH]
            with translated(f"delete {len(part)} stale rows"):
                ds.delete(f"_rowaddr IN ({', '.join(map(str, part))})")
        if drop:
            self.store.reload()
        return len(drop)

    def discard(self, ids: Sequence[str]) -> int:
        return int(self.store.delete(ids=list(ids))) if ids else 0


__all__ = ["LanceFragmentWriter", "LanceFragmentWrites"]
