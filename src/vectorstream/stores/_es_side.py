"""Elasticsearch/OpenSearch side tables, and the ``_bulk`` answer parsing the adapters share.

A side table is its own hidden index beside the collection's (``<index>__vs_<name>``), so it never
shows in the collection's counts, ids or searches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import RecordRejectedError, StoreError, StoreUnavailableError
from ._common import RestClient, doc_json, side_key_id
from .base import Doc

PAGE = 5000
SIDE_BATCH = 500  # side-table rows per _bulk or _mget request


def raise_bulk_errors(vendor: str, items: list[dict[str, Any]]) -> None:
    """Translate the failed items of a ``_bulk`` answer: overload is transient, the rest rejected."""
    rejected: dict[str, str] = {}
    transient: list[str] = []
    for item in items:
        result = next(iter(item.values()))
        error = result.get("error")
        if not error:
            continue
        reason = (
            f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else str(error)
        )
        if int(result.get("status", 400)) in (429, 503) or "rejected_execution" in reason:
            transient.append(reason)
        else:
            rejected[str(result.get("_id"))] = reason
    if transient:
        # Bulk writes are idempotent by _id: re-sending the whole batch is safe.
        raise StoreUnavailableError(f"{vendor} is overloaded ({transient[0]}); retry later")
    if rejected:
        raise RecordRejectedError(f"{vendor} rejected {len(rejected)} documents", rejected)


class SideIndex:
    """A side table as its own hidden index: ``_id`` = the key, the JSON document unindexed.

    Writes use ``refresh=wait_for``, so a row is durable and visible to every reader (``scan``
    included) when ``put_many``/``delete_many`` return; ``get_many`` reads in real time.
    """

    def __init__(self, http: RestClient, index: str) -> None:
        self._http = http
        self.index = index
        self._exists = False

    def _present(self, *, create: bool) -> bool:
        if self._exists:
            return True
        found = self._http.request(
            "HEAD", f"/{self.index}", action="look for a side table", ok_missing=True
        )
        if found is None and create:
            body = {
                "settings": {"index": {"hidden": True}},  # out of wildcard listings
                "mappings": {
                    "dynamic": False,
                    "properties": {
                        "key": {"type": "keyword"},
                        "doc": {"type": "object", "enabled": False},
                    },
                },
            }
            try:
                self._http.request(
                    "PUT", f"/{self.index}", json_body=body, action="create a side table"
                )
            except RecordRejectedError as exc:
                if "resource_already_exists" not in str(exc):  # another process was first
                    raise
            found = {}
        self._exists = found is not None
        return self._exists

    def _bulk(self, lines: list[str], action: str) -> None:
        for i in range(0, len(lines), 2 * SIDE_BATCH):
            body = ("\n".join(lines[i : i + 2 * SIDE_BATCH]) + "\n").encode("utf-8")
            answer = self._http.request(
                "POST",
                "/_bulk",
                params={"refresh": "wait_for"},
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
                action=action,
            )
            if answer.get("errors"):
                # (A delete of a row that is not there answers "not_found", which is no error.)
                try:
                    raise_bulk_errors(self._http.vendor, answer.get("items", []))
                except RecordRejectedError as exc:
                    raise StoreError(f"cannot {action} in {self.index}: {exc.rejected}") from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        keys = list(dict.fromkeys(keys))
        if not keys or not self._present(create=False):
            return out
        for i in range(0, len(keys), SIDE_BATCH):
            ids = {side_key_id(k): k for k in keys[i : i + SIDE_BATCH]}
            answer = self._http.request(
                "POST",
                f"/{self.index}/_mget",
                json_body={"ids": list(ids)},
                action="read a side table",
                ok_missing=True,
            )
            for d in (answer or {}).get("docs", []):
                src = d.get("_source") or {}
                key = ids.get(str(d.get("_id")))
                if d.get("found") and key is not None and src.get("key") == key:
                    out[key] = src.get("doc") or {}
        return out

    def put_many(self, docs: Mapping[str, Doc]) -> None:
        if not docs:
            return
        self._present(create=True)
        lines: list[str] = []
        for key, doc in docs.items():
            lines.append(json.dumps({"index": {"_index": self.index, "_id": side_key_id(key)}}))
            lines.append(
                f'{{"key": {json.dumps(key, ensure_ascii=False)}, "doc": {doc_json(key, doc)}}}'
            )
        self._bulk(lines, "write side table rows")

    def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys or not self._present(create=False):
            return
        lines = [
            json.dumps({"delete": {"_index": self.index, "_id": side_key_id(k)}}) for k in keys
        ]
        self._bulk(lines, "delete side table rows")

    def scan(self) -> Iterator[tuple[str, Doc]]:
        if not self._present(create=False):
            return
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": {"match_all": {}},
                "sort": [{"key": "asc"}],
            }
            if after is not None:
                body["search_after"] = after
            answer = self._http.request(
                "POST", f"/{self.index}/_search", json_body=body, action="scan a side table"
            )
            page = answer.get("hits", {}).get("hits", [])
            for h in page:
                src = h.get("_source") or {}
                yield str(src["key"]), src.get("doc") or {}
            if len(page) < PAGE:
                return
            after = page[-1]["sort"]


__all__ = ["SideIndex", "raise_bulk_errors"]
