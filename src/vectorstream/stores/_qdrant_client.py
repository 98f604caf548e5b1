"""The qdrant-client backend of the Qdrant adapter: a Qdrant server, or qdrant-client's local
(embedded) mode.

The adapter talks to its backends through one small interface (``describe``, ``create``,
``upsert``, ``query``, ``scroll``, ``count``, …), which ``_qdrant_edge`` implements for a Qdrant
Edge shard. A sparse collection keeps its vocabulary size in the collection's metadata
(``vectorstream.dim``), which Qdrant does not otherwise record.
"""

from __future__ import annotations

from typing import Any

from ..errors import StoreError
from ..types import EmbeddingKind
from ._common import ID_FIELD
from ._kinds import DIM_KEY, KIND_KEY
from ._qdrant_kinds import ALL_KINDS, SPARSE_NAME
from ._side_collections import QdrantSideCollection
from .base import SideTable

SCROLL_PAGE = 1000


class ClientBackend:
    """qdrant-client, against a server or its local (embedded) mode."""

    def __init__(self, client: Any, models: Any, collection: str, *, server: bool) -> None:
        self.client = client
        self.m = models
        self.collection = collection
        self.server = server

    kinds = ALL_KINDS

    def describe(self) -> tuple[EmbeddingKind, int | None] | None:
        """The collection's kind and width, or ``None`` when it does not exist."""
        if not self.client.collection_exists(self.collection):
            return None
        config = self.client.get_collection(self.collection).config
        params = config.params
        if SPARSE_NAME in (params.sparse_vectors or {}):
            raw = (getattr(config, "metadata", None) or {}).get(DIM_KEY)
            return "sparse", int(raw) if raw else None
        vectors = params.vectors
        if not isinstance(vectors, self.m.VectorParams):
            raise StoreError(
                f"Qdrant collection {self.collection!r} has named vectors "
                f"{sorted(vectors or {})}; it was not made by vectorstream"
            )
        if vectors.multivector_config is not None:
            return "multivector", int(vectors.size)
        return "dense", int(vectors.size)

    def create(self, kind: EmbeddingKind, dim: int, hnsw_m: int, ef_construct: int) -> None:
        m = self.m
        hnsw = m.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construct)
        if kind == "sparse":
            self.client.create_collection(
                self.collection,
                vectors_config={},
                sparse_vectors_config={SPARSE_NAME: m.SparseVectorParams()},
                hnsw_config=hnsw,
                metadata={KIND_KEY: kind, DIM_KEY: dim},
            )
        else:
            multi = (
                m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
                if kind == "multivector"
                else None
            )
            self.client.create_collection(
                self.collection,
                vectors_config=m.VectorParams(
                    size=dim, distance=m.Distance.COSINE, multivector_config=multi
                ),
                hnsw_config=hnsw,
            )
        if self.server:
            # Local mode has no payload indexes (and warns); a server uses them for filters.
            for field in ("source", "model"):
                self.client.create_payload_index(
                    self.collection, field, m.PayloadSchemaType.KEYWORD
                )

    def upsert(self, ids: list[str], vectors: Any, payloads: list[dict[str, Any]]) -> None:
        batch = self.m.Batch(ids=ids, vectors=vectors, payloads=payloads)
        self.client.upsert(self.collection, points=batch, wait=True)

    def sparse(self, indices: list[int], values: list[float]) -> Any:
        return self.m.SparseVector(indices=indices, values=values)

    def delete_ids(self, ids: list[str]) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.PointIdsList(points=ids), wait=True
        )

    def delete_filter(self, flt: Any) -> None:
        self.client.delete(
            self.collection, points_selector=self.m.FilterSelector(filter=flt), wait=True
        )

    def existing(self, ids: list[str]) -> int:
        return len(
            self.client.retrieve(self.collection, ids=ids, with_payload=False, with_vectors=False)
        )

    def query(
        self,
        vector: Any,
        limit: int,
        flt: Any,
        threshold: float | None,
        ef: int,
        using: str | None = None,
    ) -> list[Any]:
        # Local mode searches exactly and warns about search parameters; a server uses hnsw_ef.
        params = self.m.SearchParams(hnsw_ef=ef) if self.server else None
        res = self.client.query_points(
            self.collection,
            query=vector,
            using=using,
            limit=limit,
            query_filter=flt,
            score_threshold=threshold,
            with_payload=True,
            search_params=params,
        )
        return list(res.points)

    def scroll(self, flt: Any) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            page, offset = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=[ID_FIELD],
                with_vectors=False,
            )
            out.extend(page)
            if offset is None:
                return out

    def count(self, flt: Any) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    def flush(self) -> None:
        """Writes use ``wait=True``: acknowledged means applied."""

    def close(self) -> None:
        self.client.close()

    def side_table(self, name: str, call: Any) -> SideTable:
        return QdrantSideCollection(self.client, self.m, name, call)


__all__ = ["ClientBackend"]
