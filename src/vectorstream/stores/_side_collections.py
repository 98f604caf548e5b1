"""Side tables kept as collections of the vector database itself (Qdrant, Milvus, Chroma).

A side table ``name`` of collection ``docs`` is its own collection, ``docs__vs_name``, beside the
records' one: it never shows in their counts, ids or searches, and every process on every machine
that opens the database sees the same rows. A row is stored under an id derived from its key
(``side_key_id``, the key itself where it fits), with the key and the JSON text of the document
beside it; readers check the stored key. Documents are kept as JSON text, not as the database's
JSON type, so they read back exactly (integers beyond 2**53 included).

Vector databases want vectors: Qdrant takes a collection without any (``vectors_config={}``, in
local mode and on a server alike); Milvus and Chroma get the smallest vector they accept, a
1-dimensional zero, which nothing ever searches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, StoreError
from ._common import SIDE_PREFIX, doc_json, side_key_id, side_name, uuid_for
from .base import Doc, SideTable

PAGE = 1000  # rows per read, scroll or write request
MILVUS_VARCHAR = 65_535  # Milvus' VARCHAR bound, in bytes

Call = Callable[..., Any]  # call(action, fn, *args, **kwargs): runs fn, translating vendor errors


def side_collection_name(collection: str, name: str, *, max_bytes: int) -> str:
    """``<collection>__vs_<name>``, or a shortened form with a hash where the store bounds names.

    Every process derives the same name, so a shortened one is found again; the hash keeps two long
    collection names that share a prefix apart.
    """
    full = f"{collection}{SIDE_PREFIX}{side_name(name)}"
    if len(full.encode("utf-8")) <= max_bytes:
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:12]
    tail = f"{SIDE_PREFIX}{name}_{digest}"
    if len(tail) > max_bytes // 2:
        tail = f"{SIDE_PREFIX}{digest}"
    head = collection.encode("utf-8")[: max_bytes - len(tail)].decode("utf-8", "ignore")
    return head + tail


def refuse_side_marker(collection: str, vendor: str) -> None:
    """A collection may not be named like a side table: listings and side tables would mix."""
    if SIDE_PREFIX in collection:
        raise ConfigError(
            f"{vendor} collection name {collection!r} contains {SIDE_PREFIX!r}, which marks "
            "side tables; choose another name"
        )


class ReadOnlySideTable:
    """A side table of a store opened for reading (``mode="r"``): reads pass, writes are refused."""

    def __init__(self, table: SideTable, what: str) -> None:
        self._table = table
        self.what = what

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        return self._table.get_many(keys)

    def scan(self) -> Iterator[tuple[str, Doc]]:
        return self._table.scan()

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if docs:
            self._refuse()

    def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            self._refuse()

    def _refuse(self) -> None:
        raise StoreError(
            f"{self.what} was opened read-only (mode='r'); open it with mode='w' to write its "
            "side tables"
        )


def _keyed(keys: Sequence[str]) -> dict[str, str]:
    """Stored id → key, for the distinct ``keys``."""
    return {side_key_id(k): k for k in dict.fromkeys(keys)}


def _loads(key: str, text: Any) -> Doc:
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"side table row {key!r} holds no JSON document: {exc}") from exc
    if not isinstance(doc, dict):
        raise StoreError(f"side table row {key!r} holds {type(doc).__name__}, not a document")
    return doc


class QdrantSideCollection:
    """A side table as a Qdrant collection without vectors: payload ``{"key", "doc"}``.

    Writes pass ``wait=True``: acknowledged means applied and in Qdrant's write-ahead log.
    """

    def __init__(self, client: Any, models: Any, name: str, call: Call) -> None:
        self._client = client
        self._m = models
        self.name = name
        self._call = call
        self._exists = False

    def _present(self, *, create: bool) -> bool:
        if self._exists:
            return True
        found = bool(self._call("look for a side table", self._client.collection_exists, self.name))
        if not found and create:
            try:
                self._call(
                    "create a side table",
                    lambda: self._client.create_collection(self.name, vectors_config={}),
                )
            except StoreError:
                # Another writer may have created it between the look and the create.
                if not self._call(
                    "look for a side table", self._client.collection_exists, self.name
                ):
                    raise
            found = True
        self._exists = found
        return found

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        ids = _keyed(keys)
        if not ids or not self._present(create=False):
            return out
        by_uuid = {uuid_for(i): k for i, k in ids.items()}
        uuids = list(by_uuid)
        for i in range(0, len(uuids), PAGE):
            points = self._call(
                "read a side table",
                lambda part: self._client.retrieve(
                    self.name, ids=part, with_payload=True, with_vectors=False
                ),
                uuids[i : i + PAGE],
            )
            for p in points:
                payload = p.payload or {}
                key = by_uuid.get(str(p.id))
                if key is not None and payload.get("key") == key:
                    out[key] = _loads(key, payload.get("doc"))
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        self._present(create=True)
        points = [
            self._m.PointStruct(
                id=uuid_for(side_key_id(k)), vector={}, payload={"key": k, "doc": doc_json(k, d)}
            )
            for k, d in docs.items()
        ]
        for i in range(0, len(points), PAGE):
            self._call(
                "write side table rows",
                lambda part: self._client.upsert(self.name, points=part, wait=True),
                points[i : i + PAGE],
            )

    def delete_many(self, keys: Sequence[str]) -> None:
        uuids = [uuid_for(i) for i in _keyed(keys)]
        if not uuids or not self._present(create=False):
            return
        for i in range(0, len(uuids), PAGE):
            selector = self._m.PointIdsList(points=uuids[i : i + PAGE])
            self._call(
                "delete side table rows",
                lambda sel: self._client.delete(self.name, points_selector=sel, wait=True),
                selector,
            )

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        offset = None
        while True:
            page, offset = self._call(
                "scan a side table",
                lambda off: self._client.scroll(
                    self.name, limit=PAGE, offset=off, with_payload=True, with_vectors=False
                ),
                offset,
            )
            for p in page:
                payload = p.payload or {}
                key = str(payload["key"])
                yield key, _loads(key, payload.get("doc"))
            if offset is None or not page:
                return


class MilvusSideCollection:
    """A side table as a Milvus collection: ``id`` VARCHAR primary key, ``key`` and ``doc``
    VARCHAR, and the 1-dimensional ``v`` Milvus requires (a FLAT index, never searched).

    The collection is strongly consistent, so a read sees every acknowledged write; Milvus logs a
    write before acknowledging it, so it is durable on return without a flush.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        translate: Callable[[Exception, str], StoreError],
        needs_load: Callable[[Exception], bool],
    ) -> None:
        self._client = client
        self.name = name
        self._translate = translate
        self._needs_load = needs_load
        self._exists = False

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not self._needs_load(exc):
                raise self._translate(exc, action) from exc
        # Released (a restarted server, or created by another process): load it, try once more.
        try:
            self._client.load_collection(self.name)
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._translate(exc, action) from exc

    def _present(self, *, create: bool) -> bool:
        if self._exists:
            return True
        found = bool(self._call("look for a side table", self._client.has_collection, self.name))
        if not found and create:
            self._create()
            found = True
        elif found:
            self._call("load a side table", self._client.load_collection, self.name)
        self._exists = found
        return found

    def _create(self) -> None:
        from pymilvus import DataType

        c = self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("key", DataType.VARCHAR, max_length=MILVUS_VARCHAR)
        schema.add_field("doc", DataType.VARCHAR, max_length=MILVUS_VARCHAR)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=1)
        index = c.prepare_index_params()
        index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        try:
            self._call(
                "create a side table",
                c.create_collection,
                self.name,
                schema=schema,
                index_params=index,
                consistency_level="Strong",
            )
        except StoreError:
            if not self._call("look for a side table", c.has_collection, self.name):
                raise  # not a race with another writer that created it first

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        ids = _keyed(keys)
        if not ids or not self._present(create=False):
            return out
        id_list = list(ids)
        for i in range(0, len(id_list), PAGE):
            rows = self._call(
                "read a side table",
                self._client.query,
                self.name,
                filter=_milvus_ids(id_list[i : i + PAGE]),
                output_fields=["id", "key", "doc"],
            )
            for row in rows:
                key = ids.get(str(row["id"]))
                if key is not None and row.get("key") == key:
                    out[key] = _loads(key, row.get("doc"))
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        rows = []
        for k, d in docs.items():
            text = doc_json(k, d)
            if (
                len(text.encode("utf-8")) > MILVUS_VARCHAR
                or len(k.encode("utf-8")) > MILVUS_VARCHAR
            ):
                raise StoreError(
                    f"side table row {k!r} does not fit Milvus' {MILVUS_VARCHAR}-byte text field"
                )
            rows.append({"id": side_key_id(k), "key": k, "doc": text, "v": [0.0]})
        self._present(create=True)
        for i in range(0, len(rows), PAGE):
            self._call("write side table rows", self._client.upsert, self.name, rows[i : i + PAGE])

    def delete_many(self, keys: Sequence[str]) -> None:
        ids = list(_keyed(keys))
        if not ids or not self._present(create=False):
            return
        for i in range(0, len(ids), PAGE):
            self._call(
                "delete side table rows",
                self._client.delete,
                self.name,
                filter=_milvus_ids(ids[i : i + PAGE]),
            )

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        it = self._call(
            "scan a side table",
            self._client.query_iterator,
            self.name,
            batch_size=PAGE,
            filter='id != ""',
            output_fields=["key", "doc"],
        )
        try:
            while True:
                page = self._call("scan a side table", it.next)
                if not page:
                    return
                for row in page:
                    key = str(row["key"])
                    yield key, _loads(key, row.get("doc"))
        finally:
            it.close()


def _milvus_ids(ids: Sequence[str]) -> str:
    # JSON string literals are valid Milvus ones, quotes and backslashes escaped (pymilvus' own
    # ``ids=`` argument quotes with no escaping, which a key holding a quote breaks).
    return f"id in [{', '.join(json.dumps(i, ensure_ascii=False) for i in ids)}]"


class ChromaSideCollection:
    """A side table as a Chroma collection: the document's JSON as the Chroma document, the key
    in its metadata, and a 1-dimensional zero embedding (Chroma wants one, never searched)."""

    def __init__(self, client: Any, name: str, call: Call, owner: str) -> None:
        self._client = client
        self.name = name
        self._call = call
        self._owner = owner
        self._col: Any = None

    def _present(self, *, create: bool) -> bool:
        if self._col is not None:
            return True
        names = {
            getattr(c, "name", c)
            for c in self._call("list collections", self._client.list_collections)
        }
        if self.name in names:
            self._col = self._call(
                "open a side table", self._client.get_collection, self.name, embedding_function=None
            )
        elif create:
            self._col = self._call(
                "create a side table",
                self._client.get_or_create_collection,
                self.name,
                embedding_function=None,  # rows bring their (dummy) embeddings: never a model
                metadata={"vectorstream:side_table_of": self._owner},
            )
        return self._col is not None

    def _batch(self) -> int:
        return min(PAGE, int(self._call("read the batch limit", self._client.get_max_batch_size)))

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        ids = _keyed(keys)
        if not ids or not self._present(create=False):
            return out
        id_list, step = list(ids), self._batch()
        for i in range(0, len(id_list), step):
            got = self._call(
                "read a side table",
                self._col.get,
                ids=id_list[i : i + step],
                include=["documents", "metadatas"],
            )
            for rid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                key = ids.get(rid)
                if key is not None and (meta or {}).get("key") == key:
                    out[key] = _loads(key, text)
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        rows = [(side_key_id(k), k, doc_json(k, d)) for k, d in docs.items()]
        self._present(create=True)
        step = self._batch()
        for i in range(0, len(rows), step):
            part = rows[i : i + step]
            self._call(
                "write side table rows",
                self._col.upsert,
                ids=[r[0] for r in part],
                embeddings=[[0.0]] * len(part),
                documents=[r[2] for r in part],
                metadatas=[{"key": r[1]} for r in part],
            )

    def delete_many(self, keys: Sequence[str]) -> None:
        ids = list(_keyed(keys))
        if not ids or not self._present(create=False):
            return
        step = self._batch()
        for i in range(0, len(ids), step):
            self._call("delete side table rows", self._col.delete, ids=ids[i : i + step])

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        offset = 0
        while True:
            page = self._call(
                "scan a side table",
                self._col.get,
                include=["documents", "metadatas"],
                limit=PAGE,
                offset=offset,
            )
            for text, meta in zip(page["documents"], page["metadatas"], strict=True):
                key = str((meta or {})["key"])
                yield key, _loads(key, text)
            if len(page["ids"]) < PAGE:
                return
            offset += PAGE


__all__ = [
    "ChromaSideCollection",
    "MilvusSideCollection",
    "QdrantSideCollection",
    "ReadOnlySideTable",
    "refuse_side_marker",
    "side_collection_name",
]
