"""A safetensors store's writer: the live records, the journal, and publishing a new pair.

The writer indexes the published pair (id → source, chunk index, where its line and vector are),
replays a journal a killed writer left (``_st_journal``), journals every upsert and delete, and
publishes on ``flush``/``close``:

1. the live records sorted by (source, chunk_index, id): rows in the same order for the same
   corpus, whatever order the pipeline's workers wrote them in;
2. the mapping written to ``MAPPING.tmp`` (lines copied from the pair or the journal), ``fsync``;
3. the tensor to ``TENSOR.tmp``: the header naming the mapping's row count and SHA-256 and the
   next generation, then the rows gathered block by block from the mapped pair and journal
   (memory bounded by the block, not the corpus), ``fsync``;
4. the mapping renamed over the old one, then the tensor, then the folder ``fsync``ed; the
   journal removed.

A writer killed between the two renames leaves a new mapping and an old tensor: readers refuse
that pair (the digest differs), and the next writer renames the complete ``TENSOR.tmp`` into
place before anything else (``roll_forward``). Killed anywhere else, the old pair stands and the
journal is replayed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import ConfigError, StoreError
from ..types import Record
from ._kinds import DIM_KEY, KIND_KEY
from ._st_format import (
    DIGEST_KEY,
    FORMAT_KEY,
    GENERATION_KEY,
    MAPPING_KEY,
    ROWS_KEY,
    WRITE_DTYPES,
    TensorInfo,
    as_float32,
    fsync_dir,
    map_rows,
    read_info,
    write_tensor,
)
from ._st_journal import Journal
from ._st_mapping import encode_row, parse_row, record_row, scan
from ._st_memory import PairPaths, pair_problem

log = logging.getLogger("vectorstream.stores.safetensors")

_BLOCK = 8192  # rows per block written


class Entry(NamedTuple):
    """Where a live record's mapping line and vector are: the published pair or the journal."""

    source: str
    chunk_index: int
    journal: bool
    vector: int  # its row in the published tensor or in the journal's vectors
    offset: int  # its line in the published mapping or in the journal's lines
    length: int


def check_dim(paths: PairPaths, wanted: int | None, held: int, what: str = "holds") -> None:
    """``ConfigError`` when a model's width ``wanted`` is not the ``held`` width of the pair."""
    if wanted is not None and wanted != held:
        raise ConfigError(
            f"{paths.tensor} {what} {held}-dimensional rows under {paths.key!r} but the model "
            f"makes {wanted}-dimensional vectors: use the model the file was made with, or "
            "another path"
        )


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


class PairWriter:
    """The writer's state of one pair. Not thread-safe: the pipeline writes from one thread."""

    def __init__(self, paths: PairPaths, dim: int | None, dtype: str | None) -> None:
        self.paths = paths
        self.dim = dim
        self.dtype = dtype  # "float32" / "float16", or None: keep the pair's
        self.journal = Journal(paths.tensor)
        self.index: dict[str, Entry] = {}
        self.by_source: dict[str, set[str]] = {}
        self.generation = 0
        self.dirty = False
        self._base: tuple[TensorInfo, np.ndarray] | None = None
        self._lines: BinaryIO | None = None  # the published mapping, to read lines back

    # -- opening -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Finish an interrupted publish, index the published pair, replay a journal."""
        try:
            self.paths.tensor.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.paths.tensor.parent}: {exc}") from exc
        self.roll_forward()
        if self.paths.tensor.exists():
            self._index_pair()
        replayed = 0
        for line in self.journal.replay():
            replayed += 1
            if line.deleted:
                self.drop(line.id)
            else:
                assert line.row is not None
                chunk = int(line.row["chunk_index"])
                entry = Entry(line.source, chunk, True, line.vector, line.offset, line.length)
                self.put(line.id, entry)
        if self.journal.dim is not None:
            check_dim(self.paths, self.dim, self.journal.dim, "has a journal of")
            self.dim = self.journal.dim
            self.dirty = True
            log.info(
                "%s: replayed %d lines an interrupted writer left", self.paths.tensor, replayed
            )

    def roll_forward(self) -> None:
        """Finish a publish killed between its two renames, or drop its temporary files."""
        tensor, mapping = self.paths.tensor, self.paths.mapping
        try:
            if _tmp(tensor).exists():
                done = False
                if not _tmp(mapping).exists() and mapping.exists():
                    # The mapping was renamed, so the tensor written for it is complete (fsynced).
                    with _tmp(tensor).open("rb") as fh:
                        info = read_info(fh, _tmp(tensor), self.paths.key)
                    digest = hashlib.sha256(mapping.read_bytes()).hexdigest()
                    done = info.metadata.get(DIGEST_KEY) == digest
                if done:
                    os.replace(_tmp(tensor), tensor)
                    fsync_dir(tensor.parent)
                    log.warning("%s: finished a publish that was interrupted", tensor)
                else:
                    _tmp(tensor).unlink()
            _tmp(mapping).unlink(missing_ok=True)
        except (OSError, StoreError) as exc:
            raise StoreError(f"cannot recover the interrupted write of {tensor}: {exc}") from exc

    def _open_pair(self) -> TensorInfo:
        self.close_pair()
        paths = self.paths
        try:
            with paths.tensor.open("rb") as fh:
                info = read_info(fh, paths.tensor, paths.key)
                raw = map_rows(fh, info)
            self._lines = paths.mapping.open("rb")
        except FileNotFoundError as exc:
            raise StoreError(
                f"{paths.tensor} has no mapping file {paths.mapping}: restore it, or remove the "
                "tensor to ingest anew"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot open {paths.tensor} for writing: {exc}") from exc
        self._base = (info, raw)
        generation = info.metadata.get(GENERATION_KEY, "0")
        self.generation = int(generation) if generation.isdigit() else 0
        return info

    def _index_pair(self) -> None:
        """Index the published pair's rows (ids, sources, where their lines are)."""
        info = self._open_pair()
        check_dim(self.paths, self.dim, info.dim)
        self.dim = info.dim
        assert self._lines is not None
        paths = self.paths
        digest = hashlib.sha256()
        self.index.clear()
        self.by_source.clear()
        rows = 0
        for number, (offset, length, body) in enumerate(
            scan(self._lines, paths.json_lines, digest)
        ):
            row = parse_row(body, number, paths.json_lines, paths.mapping)
            self.put(
                row["id"], Entry(row["source"], row["chunk_index"], False, number, offset, length)
            )
            rows += 1
        problem = pair_problem(info, rows, digest.hexdigest(), paths)
        if problem is not None:
            raise StoreError(f"{problem}; a writer will not build on it")

    # -- the live records ----------------------------------------------------------------------

    def put(self, rid: str, entry: Entry) -> None:
        self.drop(rid)
        self.index[rid] = entry
        self.by_source.setdefault(entry.source, set()).add(rid)

    def drop(self, rid: str) -> None:
        old = self.index.pop(rid, None)
        if old is not None:
            held = self.by_source.get(old.source)
            if held is not None:
                held.discard(rid)
                if not held:
                    del self.by_source[old.source]

    def append(self, records: list[Record], tombstones: list[tuple[str, str]]) -> None:
        """Journal upserts and deletes (durable against a kill when it returns)."""
        if self.dim is None:
            raise StoreError(f"the safetensors store {self.paths.tensor} needs dim to write")
        lines = [
            (encode_row(record_row(r)), np.asarray(r.embedding.as_dense(), dtype=np.float32))
            for r in records
        ]
        placed = self.journal.append(self.dim, lines, tombstones)
        for record, (vector, offset, length) in zip(records, placed, strict=True):
            self.put(
                record.id, Entry(record.source, record.chunk_index, True, vector, offset, length)
            )
        for rid, _ in tombstones:
            self.drop(rid)
        self.dirty = True

    def ordered(self) -> list[tuple[str, Entry]]:
        """The live records in their stable order: by source, chunk index and id."""
        return sorted(self.index.items(), key=lambda item: (item[1][:2], item[0]))

    def row(self, entry: Entry) -> dict[str, Any]:
        """The mapping fields of a live record."""
        if entry.journal:
            body = self.journal.line(entry.offset, entry.length)
            return parse_row(body, entry.vector, True, self.journal.lines_path)
        assert self._lines is not None
        self._lines.seek(entry.offset)
        body = self._lines.read(entry.length)
        return parse_row(body, entry.vector, self.paths.json_lines, self.paths.mapping)

    def line(self, entry: Entry) -> bytes:
        """The mapping line of a live record as a publish writes it (with its newline)."""
        if entry.journal:
            return self.journal.line(entry.offset, entry.length) + b"\n"  # written by encode_row
        assert self._base is not None and self._lines is not None
        if FORMAT_KEY not in self._base[0].metadata:
            return encode_row(self.row(entry))  # another tool's mapping: rewritten in our layout
        self._lines.seek(entry.offset)
        return self._lines.read(entry.length) + b"\n"  # ours, checked by its digest: as it is

    def vectors(self, entries: list[Entry]) -> np.ndarray:
        """The vectors of ``entries`` as float32 rows, gathered from the pair and the journal."""
        out = np.empty((len(entries), self.dim or 0), dtype=np.float32)
        mine = np.fromiter((e.journal for e in entries), dtype=bool, count=len(entries))
        rows = np.fromiter((e.vector for e in entries), dtype=np.int64, count=len(entries))
        if mine.any():
            out[mine] = self.journal.vectors()[rows[mine]]
        if not mine.all():
            assert self._base is not None
            info, raw = self._base
            out[~mine] = as_float32(raw[rows[~mine]], info.dtype)
        return out

    # -- publishing ----------------------------------------------------------------------------

    def publish(self) -> None:
        """Write the live records as a new pair and rename it into place (see the module doc)."""
        dim = self.dim
        if dim is None:
            return
        ordered = self.ordered()
        tensor, mapping = self.paths.tensor, self.paths.mapping
        digest = hashlib.sha256()
        published: dict[str, Entry] = {}
        try:
            with _tmp(mapping).open("wb") as out:
                offset = 0
                for number, (rid, entry) in enumerate(ordered):
                    line = self.line(entry)
                    out.write(line)
                    digest.update(line)
                    published[rid] = entry._replace(
                        journal=False, vector=number, offset=offset, length=len(line) - 1
                    )
                    offset += len(line)
                out.flush()
                os.fsync(out.fileno())
            metadata = {
                FORMAT_KEY: "1",
                KIND_KEY: "dense",
                DIM_KEY: str(dim),
                ROWS_KEY: str(len(ordered)),
                MAPPING_KEY: mapping.name,
                DIGEST_KEY: digest.hexdigest(),
                GENERATION_KEY: str(self.generation + 1),
            }
            blocks = (
                self.vectors([e for _, e in ordered[lo : lo + _BLOCK]])
                for lo in range(0, len(ordered), _BLOCK)
            )
            shape = (len(ordered), dim)
            write_tensor(_tmp(tensor), self.paths.key, shape, self._dtype(), metadata, blocks)
            # The mapping first: a reader between the two renames sees a tensor whose metadata
            # does not match the mapping, and looks again; a writer killed there rolls forward.
            os.replace(_tmp(mapping), mapping)
        except OSError as exc:
            for tmp in (_tmp(tensor), _tmp(mapping)):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {tensor}: {exc}") from exc
        try:
            os.replace(_tmp(tensor), tensor)
            fsync_dir(tensor.parent)
        except OSError as exc:
            # The new mapping is in place and its tensor complete: the next writer to open the
            # store renames it (roll_forward); until then readers refuse the pair.
            raise StoreError(
                f"cannot rename {_tmp(tensor)} over {tensor}: {exc}; the next writer to open "
                "the store finishes it"
            ) from exc
        self.journal.discard()
        self._open_pair()
        self.index = published  # the same ids and sources, now all in the new pair
        self.dirty = False
        log.debug("published %s: %d rows, generation %d", tensor, len(ordered), self.generation)

    def _dtype(self) -> str:
        if self.dtype is not None:
            return WRITE_DTYPES[self.dtype]
        if self._base is not None and self._base[0].dtype in WRITE_DTYPES.values():
            return self._base[0].dtype
        return "F32"

    # -- lifetime ------------------------------------------------------------------------------

    def close_pair(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        self._base = None

    def close(self) -> None:
        self.journal.close()
        self.close_pair()


__all__ = ["Entry", "PairWriter", "check_dim"]
