"""The safetensors store (``safetensors:PATH``): one embeddings tensor and a mapping file beside it.

The lean way to serve semantic search without a database: the corpus embedded once into one
safetensors file (one 2-D tensor, a row per chunk) plus a JSON Lines mapping of the rows' texts,
copied to every service instance and held in memory there. As a sink, ``vectorstream ingest …
--store safetensors:PATH`` writes the pair; as a source, ``search``, ``serve`` and ``/similar``
open it read-only and search it exactly (cosine top-k, DIPR range, ``where`` filters).

Where the files go (a path ending in ``.safetensors`` is the tensor; anything else is a folder):

* ``safetensors:out/`` → ``out/<collection>.safetensors`` and ``out/<collection>.jsonl``;
* ``safetensors:out/emb.safetensors`` → that file and ``out/emb.jsonl`` (the collection ignored).

Options, as keywords or in the URI's query (``safetensors:emb.safetensors?key=emb&texts=t.txt``):
``key`` (the tensor's name, default ``embeddings``), ``texts`` (the mapping file, relative to the
tensor's folder; JSON Lines or one text per line, see ``_st_mapping``), ``dtype`` (what a writer
writes: ``float32``, or ``float16`` for half the bytes; default the existing file's, else float32)
and ``mode`` (``"r"``: read-only, no lock, no writes).

A writer keeps the published pair as it is and journals its upserts and deletes beside it
(``_st_journal``); ``flush``/``close`` publish the result: rows sorted by (source, chunk_index,
id), the mapping and then the tensor written under temporary names, ``fsync``ed and renamed over
the old ones. The tensor's metadata names the mapping's row count and SHA-256 and a generation, so
a reader never serves a tensor with the mapping of another generation (``_st_memory``). The lock
(``TENSOR.lock``) and the manifest (``TENSOR.vs-manifest.sqlite``) are the file sinks'
(``_filesink``); readers take no lock and write nothing, so any number of processes can serve the
same files.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..types import EmbeddingKind, Hit, Record
from ._common import AdapterOptions, as_query, check_k, check_range
from ._filesink import FileSink, strip_scheme
from ._kinds import check_kind, refuse_kind
from ._st_format import WRITE_DTYPES, as_float32, read_info
from ._st_mapping import is_json_lines, parse_row, scan
from ._st_memory import PairPaths, ServedPair, read_pair
from ._st_writer import PairWriter, check_dim
from .base import Query, StoreCapabilities, Where, validate_where

DEFAULT_KEY = "embeddings"
# A scan of at most this many bytes of rows takes a few milliseconds on one core, less than two
# thread hand-offs under load: the server runs it on its event loop (``answers_from_memory``).
LOOP_SEARCH_BYTES = 64 * 1024 * 1024
_REPLAY_BLOCK = 8192  # records read back per block of vectors


class SafetensorsStore(FileSink):
    """An embeddings tensor and its mapping, written atomically and searched exactly in memory."""

    format = "safetensors"
    capabilities = StoreCapabilities(kinds=frozenset({"dense"}), filters=True, range_search=True)
    nonzero = True  # searched by cosine similarity: an all-zero vector cannot be scored

    def __init__(
        self,
        uri: str,
        collection: str,
        paths: PairPaths,
        dim: int | None,
        *,
        read_only: bool,
        dtype: str | None = None,
    ) -> None:
        self.paths = paths
        self.key = paths.key
        self._writer = PairWriter(paths, dim, dtype)
        self._served: ServedPair | None = None
        self._served_lock = threading.Lock()
        super().__init__(uri, collection, paths.tensor, dim, read_only)
        try:
            if read_only:
                self._served = ServedPair.load(paths)
                check_dim(paths, dim, self._served.info.dim)
                self.dim = self._served.info.dim
            else:
                self._writer.prepare()
                self.dim = self._writer.dim
        except BaseException:
            self._writer.close()
            self._lock.release()
            raise

    @classmethod
    def open(
        cls, uri: str, collection: str = "documents", *, dim: int | None = None, **options: Any
    ) -> SafetensorsStore:
        """Open the pair at ``uri`` (see the module doc for paths and options)."""
        head, _, query = uri.partition("?")
        given = _query_options(query, uri)
        clash = sorted(set(given) & set(options))
        if clash:
            raise ConfigError(f"{clash} given both in the URI {uri!r} and as keywords")
        opts = AdapterOptions("safetensors", {**given, **options})
        key = opts.take("key", DEFAULT_KEY)
        texts = opts.take("texts")
        dtype = opts.take("dtype")
        kind = opts.take("kind")
        opts.finish()
        if kind is not None and check_kind(kind) != "dense":
            raise refuse_kind("safetensors", check_kind(kind), ["dense"])
        if not isinstance(key, str) or not key or key == "__metadata__":
            raise ConfigError(f"key must name a tensor, got {key!r}")
        if dtype is not None and dtype not in WRITE_DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(WRITE_DTYPES)}, got {dtype!r}")
        path = strip_scheme(head, "safetensors")
        if path.suffix.lower() == ".safetensors":
            tensor = path
        else:
            if collection in ("", ".", "..") or "/" in collection or "\\" in collection:
                raise ConfigError(f"collection {collection!r} cannot name a file")
            tensor = path / f"{collection}.safetensors"
        if texts is None:
            mapping = tensor.with_suffix(".jsonl")
        else:
            named = Path(str(texts)).expanduser()
            mapping = named if named.is_absolute() else tensor.parent / named
        read_only = opts.mode == "r"
        if not read_only and not is_json_lines(mapping):
            raise ConfigError(
                f"a writer writes its mapping as JSON Lines, and {mapping.name} is not named so; "
                "use texts=NAME.jsonl (or open read-only with mode='r' to search a text list)"
            )
        paths = PairPaths(tensor, mapping, key, is_json_lines(mapping))
        return cls(uri, collection, paths, dim, read_only=read_only, dtype=dtype)

    def _stored(self) -> tuple[EmbeddingKind, int] | None:
        try:
            with self.paths.tensor.open("rb") as fh:
                return "dense", read_info(fh, self.paths.tensor, self.key).dim
        except FileNotFoundError:
            dim = self._writer.journal.stored_dim()
            return None if dim is None else ("dense", dim)
        except OSError as exc:
            raise StoreError(f"cannot read {self.paths.tensor}: {exc}") from exc

    # -- records -------------------------------------------------------------------------------

    def _append(self, rows: list[Record], tombstones: list[tuple[str, str]]) -> None:
        self._writer.append(rows, tombstones)

    def _live(self) -> dict[str, str]:
        if not self.read_only:
            return {rid: entry.source for rid, entry in self._writer.index.items()}
        assert self._served is not None
        table = self._served.snapshot.rows
        ids, sources = table.column("id").to_pylist(), table.column("source").to_pylist()
        return dict(zip(ids, sources, strict=True))

    def ids(self, source: str | None = None) -> set[str]:
        if self.read_only:
            return super().ids(source)
        if source is None:
            return set(self._writer.index)
        return set(self._writer.by_source.get(source, ()))

    def count(self) -> int:
        return len(self._live()) if self.read_only else len(self._writer.index)

    def _replay(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """The live records in the order a publish writes them (the log, already replayed)."""
        if not self.read_only:
            ordered = self._writer.ordered()
            for lo in range(0, len(ordered), _REPLAY_BLOCK):
                part = [entry for _, entry in ordered[lo : lo + _REPLAY_BLOCK]]
                vectors = self._writer.vectors(part)
                for entry, vector in zip(part, vectors, strict=True):
                    yield _stored_row(self._writer.row(entry), vector)
            return
        info, raw, _ = read_pair(self.paths)
        with self.paths.mapping.open("rb") as fh:
            for number, (_, _, body) in enumerate(scan(fh, self.paths.json_lines)):
                row = parse_row(body, number, self.paths.json_lines, self.paths.mapping)
                yield _stored_row(row, as_float32(raw[number], info.dtype))

    def flush(self) -> None:
        """Publish what was written since the last publish (a writer; nothing for a reader)."""
        if self._closed or self.read_only:
            return
        writer = self._writer
        if writer.dirty or (writer.dim is not None and not self.paths.tensor.exists()):
            writer.publish()
            with self._served_lock:
                self._served = None  # the next search loads the new generation

    # -- search --------------------------------------------------------------------------------

    def _pair(self) -> ServedPair | None:
        """The published pair held for search (a writer loads it on first use after a publish)."""
        if self._closed:
            raise StoreError(f"the safetensors store {self.target} is closed")
        served = self._served
        if served is not None or self.read_only:
            return served
        with self._served_lock:
            if self._served is None and self.paths.tensor.exists():
                self._served = ServedPair.load(self.paths)
            return self._served

    def _query(self, vector: Query) -> np.ndarray:
        q = as_query(vector, self.dim)
        if not np.any(q):
            raise ConfigError("query vector is all zeros: cosine similarity needs non-zero")
        return q

    def search(self, vector: Query, k: int = 10, where: Where | None = None) -> list[Hit]:
        """The ``k`` rows of highest cosine similarity (exact), best first."""
        check_k(k)
        q = self._query(vector)
        pair = self._pair()
        if pair is None:
            validate_where(where)
            return []
        return pair.top(q, int(k), where)

    def range_search(
        self, vector: Query, beta: float, *, limit: int = 1000, where: Where | None = None
    ) -> list[Hit]:
        """Every row within ``beta`` of the best cosine similarity (DIPR), at most ``limit``."""
        beta = check_range(beta, limit)
        q = self._query(vector)
        pair = self._pair()
        if pair is None:
            validate_where(where)
            return []
        return pair.within(q, beta, int(limit), where)

    def answers_from_memory(self, where: Where | None = None) -> bool:
        """Whether a search now scans rows already in memory, few enough (``LOOP_SEARCH_BYTES``)
        for a server to run it on its event loop rather than hand it to a worker thread."""
        served = self._served
        return (
            not where
            and not self._closed
            and served is not None
            and served.snapshot.vectors.nbytes <= LOOP_SEARCH_BYTES
        )

    def models(self) -> frozenset[str]:
        """The models the rows were embedded with (empty for a file from another tool)."""
        pair = self._pair()
        return frozenset() if pair is None else pair.snapshot.models

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            self._writer.close()
            self._served = None

    def __repr__(self) -> str:
        mode = "r" if self.read_only else "w"
        return f"SafetensorsStore({self.uri!r}, key={self.key!r}, dim={self.dim}, mode={mode!r})"


def _stored_row(row: dict[str, Any], vector: np.ndarray) -> dict[str, Any]:
    """A mapping row and its vector in the layout of ``_records`` (metadata as JSON text), which
    ``FileSink.records`` reads."""
    return {
        **row,
        "metadata": json.dumps(row["metadata"], ensure_ascii=False, default=str),
        "vector": np.asarray(vector, dtype=np.float32),
        "deleted": False,
    }


def _query_options(query: str, uri: str) -> dict[str, str]:
    """The options in a URI's query string (``?key=emb&texts=texts.txt``)."""
    if not query:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ConfigError(f"cannot read the options of {uri!r}: {exc}") from exc
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise ConfigError(f"option {name!r} is given twice in {uri!r}")
        out[name] = value
    return out


__all__ = ["DEFAULT_KEY", "SafetensorsStore"]
