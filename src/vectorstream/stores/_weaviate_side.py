"""Weaviate's GraphQL literals and queries, and its side tables (a vector-less class each).

A side table is its own class beside the collection's (``<Class>__vs_<name>``), so it never
shows in the collection's counts, ids or searches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import RecordRejectedError, StoreError
from ._common import RestClient, doc_json, uuid_for
from .base import Doc

PAGE = 1000
SIDE_BATCH = 100  # side-table rows per request


class _Enum(str):
    """A GraphQL enum value (rendered without quotes)."""


def gql(value: Any) -> str:
    """Render a Python value as a GraphQL input literal: bare keys, JSON strings, bare enums."""
    if isinstance(value, _Enum):
        return str(value)
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}: {gql(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(gql(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value))
    return json.dumps(value, ensure_ascii=False)


def graphql(http: RestClient, query: str, action: str) -> dict[str, Any]:
    """Run a GraphQL query; errors in the answer (sent with status 200) become ``StoreError``."""
    answer = http.request("POST", "/v1/graphql", json_body={"query": query}, action=action)
    if answer.get("errors"):
        messages = "; ".join(str(e.get("message", e)) for e in answer["errors"])
        raise StoreError(f"Weaviate failed to {action}: {messages}")
    data: dict[str, Any] = answer.get("data") or {}
    return data


class WeaviateSideTable:
    """A side table as its own class: properties ``key`` and ``doc`` (JSON text), no vector.

    Object ids are the UUID5 of the key. Weaviate acknowledges a batch once it is in its
    write-ahead log, and reads see it from then on: writes are durable and visible on return.
    """

    def __init__(self, http: RestClient, class_name: str) -> None:
        self._http = http
        self.class_name = class_name
        self._exists = False

    def _present(self, *, create: bool) -> bool:
        if self._exists:
            return True
        found = self._http.request(
            "GET", f"/v1/schema/{self.class_name}", action="look for a side table", ok_missing=True
        )
        if found is None and create:
            body = {
                "class": self.class_name,
                "vectorizer": "none",
                "vectorIndexConfig": {"skip": True},  # rows, not vectors
                "properties": [
                    {"name": "key", "dataType": ["text"], "tokenization": "field"},
                    {
                        "name": "doc",
                        "dataType": ["text"],
                        "indexFilterable": False,
                        "indexSearchable": False,
                    },
                ],
            }
            try:
                self._http.request(
                    "POST", "/v1/schema", json_body=body, action="create a side table"
                )
            except RecordRejectedError:
                # Another process may have created it first; anything else is still an error.
                if (
                    self._http.request(
                        "GET",
                        f"/v1/schema/{self.class_name}",
                        action="look for a side table",
                        ok_missing=True,
                    )
                    is None
                ):
                    raise
            found = {}
        self._exists = found is not None
        return self._exists

    def _rows(self, args: str, action: str) -> list[dict[str, Any]]:
        query = f"{{ Get {{ {self.class_name}({args}) {{ key doc _additional {{ id }} }} }} }}"
        rows: list[dict[str, Any]] = (graphql(self._http, query, action).get("Get") or {}).get(
            self.class_name
        ) or []
        return rows

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        keys = list(dict.fromkeys(keys))
        if not keys or not self._present(create=False):
            return out
        for i in range(0, len(keys), SIDE_BATCH):
            part = keys[i : i + SIDE_BATCH]
            where = {
                "path": ["id"],
                "operator": _Enum("ContainsAny"),
                "valueTextArray": [uuid_for(k) for k in part],
            }
            wanted = set(part)
            for row in self._rows(f"where: {gql(where)} limit: {len(part)}", "read a side table"):
                if row.get("key") in wanted:
                    out[row["key"]] = json.loads(row.get("doc") or "{}")
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        self._present(create=True)
        items = list(docs.items())
        for i in range(0, len(items), SIDE_BATCH):
            objects = [
                {
                    "class": self.class_name,
                    "id": uuid_for(key),
                    "properties": {"key": key, "doc": doc_json(key, doc)},
                }
                for key, doc in items[i : i + SIDE_BATCH]
            ]
            answer = self._http.request(
                "POST",
                "/v1/batch/objects",
                json_body={"objects": objects},
                action="write side table rows",
            )
            for obj in answer if isinstance(answer, list) else []:
                errors = ((obj.get("result") or {}).get("errors") or {}).get("error") or []
                if errors:
                    key = (obj.get("properties") or {}).get("key")
                    why = "; ".join(str(e.get("message", e)) for e in errors)
                    raise StoreError(
                        f"Weaviate refused side table row {key!r} in {self.class_name}: {why}"
                    )

    def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys or not self._present(create=False):
            return
        for i in range(0, len(keys), SIDE_BATCH):
            where = {
                "path": ["id"],
                "operator": "ContainsAny",
                "valueTextArray": [uuid_for(k) for k in keys[i : i + SIDE_BATCH]],
            }
            self._http.request(
                "DELETE",
                "/v1/batch/objects",
                json_body={
                    "match": {"class": self.class_name, "where": where},
                    "output": "minimal",
                },
                action="delete side table rows",
            )

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        after: str | None = None
        while True:
            args = f"limit: {PAGE}" + (f", after: {json.dumps(after)}" if after else "")
            rows = self._rows(args, "scan a side table")
            for row in rows:
                yield str(row["key"]), json.loads(row.get("doc") or "{}")
            if len(rows) < PAGE:
                return
            after = rows[-1]["_additional"]["id"]


__all__ = ["WeaviateSideTable", "gql", "graphql"]
