"""The Qdrant Edge backend of the Qdrant adapter: one ``qdrant-edge-py`` shard per collection.

The shard lives in this process only (a folder ``<root>/<collection>``). Its side tables are
SQLite files inside that folder (``vectorstream.<name>.sqlite``): they live and go with the shard,
and any process can read them while the writer works, which a second shard could not offer (a
shard is loaded whole, into one process).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..types import EmbeddingKind
from ._common import side_name
from ._sidetable import MemorySideTable, SQLiteSideTable
from .base import SideTable

SCROLL_PAGE = 1000


class EdgeBackend:
    """qdrant-edge-py: one shard directory per collection, in this process."""

    def __init__(self, edge: Any, root: str, collection: str) -> None:
        self.m = edge
        self.path = os.path.join(root, collection)
        self.shard: Any = None
        # The shard's folder may hold side tables before the shard itself exists.
        if os.path.isfile(os.path.join(self.path, "edge_config.json")):
            self.shard = edge.EdgeShard.load(self.path)

    # The adapter keeps dense vectors only in an Edge shard.
    kinds: frozenset[EmbeddingKind] = frozenset({"dense"})

    def describe(self) -> tuple[EmbeddingKind, int | None] | None:
        """The shard's kind and width, or ``None`` when it does not exist."""
        if self.shard is None:
            return None
        # A loaded shard does not expose its config; Qdrant Edge keeps it in edge_config.json.
        with open(os.path.join(self.path, "edge_config.json"), encoding="utf-8") as fh:
            return "dense", int(json.load(fh)["vectors"][""]["size"])

    def create(self, kind: EmbeddingKind, dim: int, hnsw_m: int, ef_construct: int) -> None:
        m = self.m
        config = m.EdgeConfig(
            vectors={"": m.EdgeVectorParams(size=dim, distance=m.Distance.Cosine)},
            # 10,000 KB is the Qdrant server default below which a segment is scanned exactly.
            hnsw_config=m.HnswIndexConfig(
                m=hnsw_m, ef_construct=ef_construct, full_scan_threshold=10_000
            ),
        )
        os.makedirs(self.path, exist_ok=True)
        self.shard = m.EdgeShard.create(self.path, config)

    def upsert(self, ids: list[str], vectors: Any, payloads: list[dict[str, Any]]) -> None:
        points = [
            self.m.Point(id=i, vector={"": v}, payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        self.shard.update(self.m.UpdateOperation.upsert_points(points))

    def delete_ids(self, ids: list[str]) -> None:
        self.shard.update(self.m.UpdateOperation.delete_points(ids))

    def delete_filter(self, flt: Any) -> None:
        self.shard.update(self.m.UpdateOperation.delete_points_by_filter(flt))

    def existing(self, ids: list[str]) -> int:
        return len(self.shard.retrieve(ids, with_payload=False, with_vector=False))

    def query(
        self,
        vector: Any,
        limit: int,
        flt: Any,
        threshold: float | None,
        ef: int,
        using: str | None = None,
    ) -> list[Any]:
        m = self.m
        req = m.QueryRequest(
            limit=limit,
            query=m.Query.Nearest(vector, using=""),
            filter=flt,
            score_threshold=threshold,
            with_payload=True,
            params=m.SearchParams(hnsw_ef=ef),
        )
        return list(self.shard.query(req))

    def scroll(self, flt: Any) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            req = self.m.ScrollRequest(
                offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=True, with_vector=False
            )
            page, offset = self.shard.scroll(req)
            out.extend(page)
            if offset is None or not page:
                return out

    def count(self, flt: Any) -> int:
        return int(self.shard.count(self.m.CountRequest(exact=True, filter=flt)))

    def flush(self) -> None:
        self.shard.flush()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None

    def side_table(self, name: str, readonly: bool) -> SideTable:
        # An Edge shard lives in this process only; its side tables are SQLite files inside the
        # shard's folder, so they travel (and go) with it and other processes can read them.
        path = os.path.join(self.path, f"vectorstream.{side_name(name)}.sqlite")
        if readonly and not os.path.exists(path):
            return MemorySideTable()  # nothing written yet; a reader creates no files
        return SQLiteSideTable(path, readonly=readonly)


__all__ = ["EdgeBackend"]
