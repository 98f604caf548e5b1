"""Write-only file sinks: Parquet (``parquet:PATH``) and JSON Lines (``jsonl:PATH``).

A sink is an append-only log of records, streamed to disk batch by batch (memory is bounded by
the batch, never by the corpus):

* ``upsert`` appends the records. IDs are deterministic, so a re-run appends rows with the same
  ids; a reader replays the log and keeps the **last row per id**.
* ``delete`` appends *tombstones* (``deleted = true``) for the ids it removes; a reader drops an
  id whose last row is a tombstone. ``records()`` replays the log this way.
* ``search`` / ``range_search`` raise ``StoreError``: load the files into a store to search.
* ``side_table(name)`` (where the pipeline keeps its manifest) is a SQLite file beside the
  output, ``<file or folder>.vs-<name>.sqlite``, so the manifest travels with the files.

Where the files go: see ``ParquetSink`` (``_parquet``) and ``JSONLSink`` (``_jsonl``). Columns/keys
are those of the LanceDB table (``_records``: id, vector, text, source, page, start, end,
chunk_index, section_index, headings, metadata as a JSON string, model) plus ``deleted`` (bool).
Files written before ``section_index`` existed lack it; their records read back as section 0.
A writer lock (``<file or folder>.lock``) keeps a second writer out.
"""

from __future__ import annotations

from ._jsonl import JSONLSink
from ._parquet import ParquetSink
from ._records import sink_schema

__all__ = ["JSONLSink", "ParquetSink", "sink_schema"]
