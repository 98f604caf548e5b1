"""Helpers the store adapters share: payload layout, id mapping, lazy imports, range search.

Every adapter stores the same fields under the same names (``text``, ``source``, ``page``,
``start_offset``, ``end_offset``, ``chunk_index``, ``section_index``, ``headings``, ``metadata``,
``model``), so a record read back from any store becomes the same ``Hit``. ``section_index`` came
later than the others: a record stored without it reads back as section 0.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .._dipr import check_beta, within
from .._vectors import check_query
from ..errors import ConfigError, MissingDependencyError
from ..types import Hit, Record
from .base import Where, dipr_cut, validate_where

# A fixed namespace so the UUID derived from a record id is the same on every machine and run.
ID_NAMESPACE = uuid.UUID("7d1f6a9e-3c55-5b7e-9a43-2f0c8e61b4d2")

# Name of the payload field holding our string id in stores whose ids must be UUIDs or integers.
ID_FIELD = "vs_id"


def require(module: str, package: str, extra: str) -> ModuleType:
    """Import an optional vendor module, or raise ``MissingDependencyError`` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, extra) from exc


def pop_mode(options: dict[str, Any]) -> str | None:
    """Take the ``mode`` option (``"r"``/``"w"``) the pipeline passes to every store.

    It matters to embedded stores with a single writer (LanceDB); a database server arbitrates
    concurrent writers itself, so the server adapters accept it and need nothing more.
    """
    mode = options.pop("mode", None)
    if mode not in (None, "r", "w"):
        raise ConfigError(f"mode must be 'r' or 'w', got {mode!r}")
    return mode


def uuid_for(record_id: str) -> str:
    """A deterministic UUID5 for a string id (Qdrant and Weaviate accept only UUIDs/integers)."""
    return str(uuid.uuid5(ID_NAMESPACE, record_id))


def payload_of(record: Record) -> dict[str, Any]:
    """The stored fields of a record, JSON-ready (headings as a list, metadata a plain dict)."""
    return {
        "text": record.text,
        "source": record.source,
        "page": record.page,
        "start_offset": record.start,
        "end_offset": record.end,
        "chunk_index": record.chunk_index,
        "section_index": record.section_index,
        "headings": list(record.headings),
        "metadata": dict(record.metadata),
        "model": record.model,
    }


def hit_of(record_id: str, score: float, payload: Mapping[str, Any]) -> Hit:
    """Build a ``Hit`` from a stored payload written by ``payload_of`` (or ``flat_metadata``).

    A payload written before ``section_index`` existed has none: its hit is of section 0.
    """
    headings = payload.get("headings") or ()
    if isinstance(headings, str):  # stores with flat metadata keep headings as JSON text
        headings = json.loads(headings)
    metadata = payload.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    page = payload.get("page")
    return Hit(
        id=record_id,
        score=float(score),
        text=str(payload.get("text") or ""),
        source=str(payload.get("source") or ""),
        chunk_index=int(payload.get("chunk_index") or 0),
        start=int(payload.get("start_offset") or 0),
        end=int(payload.get("end_offset") or 0),
        section_index=int(payload.get("section_index") or 0),
        page=None if page is None or page == -1 else int(page),
        headings=tuple(str(h) for h in headings),
        metadata=dict(metadata),
    )


def as_query(vector: Any, dim: int | None) -> np.ndarray:
    """A dense query (an array or a dense ``Embedding``) checked by the one vector rule of
    ``vectorstream._vectors``; a query of another kind is a ``ConfigError``."""
    from ._kinds import dense_of

    return check_query(dense_of(vector), dim)


def check_k(k: int) -> None:
    """Every adapter answers a bad ``k`` the same way: ``ConfigError``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")


def check_range(beta: float, limit: int) -> float:
    """Every adapter answers a bad range query the same way: ``ConfigError``; returns beta."""
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ConfigError(f"limit must be an integer >= 1, got {limit!r}")
    return check_beta(beta)


def last_wins(records: Sequence[Record]) -> list[Record]:
    """Drop earlier duplicates of an id within one batch: an upsert keeps the last version."""
    seen: dict[str, Record] = {}
    for r in records:
        seen.pop(r.id, None)
        seen[r.id] = r
    return list(seen.values())


def where_items(where: Where | None) -> list[tuple[str, list[Any]]]:
    """A validated filter as ``(key, allowed values)`` pairs."""
    return [
        (key, list(value) if isinstance(value, list | tuple) else [value])
        for key, value in validate_where(where).items()
    ]


def check_delete(ids: Sequence[str] | None, source: str | None) -> None:
    """Every adapter's ``delete`` takes exactly one of ``ids`` and ``source``."""
    if (ids is None) == (source is None):
        raise ConfigError("delete takes either ids or source, not both or neither")


def scoped_items(where: Where | None, source: str | None = None) -> list[tuple[str, list[Any]]]:
    """``where_items`` of the filter, narrowed to one ``source`` when given (a delete or an id
    listing by source)."""
    items = where_items(where)
    if source is not None:
        items.append(("source", [source]))
    return items


def settled_dim(what: str, stored: int | None, wanted: int | None) -> int | None:
    """The width of an existing collection: the stored one, or ``wanted`` where the store keeps
    none; a ``ConfigError`` naming ``what`` when both are known and differ."""
    if wanted is not None and stored is not None and wanted != stored:
        raise ConfigError(f"{what} holds vectors of dimension {stored}, not {wanted}")
    return stored if stored is not None else wanted


def adaptive_range(
    search: Callable[[int], list[Hit]], beta: float, limit: int, *, first: int = 32
) -> list[Hit]:
    """DIPR over a top-k search: widen k until the last hit falls outside ``beta`` of the best.

    Searching with k = ``limit`` would always be correct, but most queries have only a few hits
    within range; starting small and doubling keeps the common case cheap.
    """
    beta = check_range(beta, limit)
    k = min(first, limit)
    while True:
        hits = search(k)
        if not hits:
            return []
        best = max(h.score for h in hits)
        exhausted = len(hits) < k or k >= limit
        if exhausted or not within(hits[-1].score, best, beta):
            return dipr_cut(hits, beta)[:limit]
        k = min(k * 4, limit)


def host_port(rest: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (a bracketed IPv6 host allowed) → ``(host, port)``."""
    rest = rest.strip("/").split("/", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.lstrip(":")
    else:
        host, _, port = rest.partition(":")
    if not host:
        raise ConfigError(f"no host in {rest!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError as exc:
        raise ConfigError(f"bad port {port!r} in {rest!r}") from exc


class AdapterOptions:
    """The options of one adapter ``open`` call, taken by name.

    Whatever an adapter has not taken when it calls ``finish`` is an error that names the options
    it does know, so a misspelt option never passes silently. ``mode`` (``"r"``/``"w"``, passed
    by the pipeline to every store) is taken on creation.
    """

    def __init__(self, vendor: str, options: Mapping[str, Any]) -> None:
        self.vendor = vendor
        self._left = dict(options)
        self.mode = pop_mode(self._left)
        self._known = {"mode"}

    def take(self, name: str, default: Any = None) -> Any:
        self._known.add(name)
        return self._left.pop(name, default)

    def number(self, name: str, default: float) -> float:
        """A positive number option (a timeout, say)."""
        value = self.take(name, default)
        try:
            out = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{self.vendor} option {name} must be a number, got {value!r}"
            ) from exc
        if not out > 0:
            raise ConfigError(f"{self.vendor} option {name} must be > 0, got {value!r}")
        return out

    def finish(self) -> None:
        if self._left:
            raise ConfigError(
                f"unknown {self.vendor} options: {sorted(self._left)}; "
                f"the {self.vendor} adapter takes {sorted(self._known)}"
            )


def server_address(uri: str, vendor: str, default_port: int) -> tuple[str, int]:
    """``scheme://HOST[:PORT]`` → ``(host, port)``, or a ``ConfigError`` showing the form."""
    scheme, _, rest = uri.partition(":")
    if not rest.startswith("//"):
        raise ConfigError(f"{vendor} URIs look like {scheme}://HOST:PORT, got {uri!r}")
    return host_port(rest[2:], default_port)


def rest_client(
    opts: AdapterOptions,
    base_url: str,
    *,
    extra: str,
    headers: Mapping[str, str] | None = None,
    auth: Any = None,
) -> RestClient:
    """The adapter's HTTP client, with the options every REST adapter takes: ``timeout``,
    ``transport`` (an ``httpx`` transport: tests, proxies) and ``verify`` (TLS verification)."""
    return RestClient(
        base_url,
        vendor=opts.vendor,
        extra=extra,
        headers={"Accept": "application/json", **(headers or {})},
        timeout=opts.number("timeout", 30.0),
        transport=opts.take("transport"),
        auth=auth,
        verify=opts.take("verify", True),
    )


_SIDE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
SIDE_PREFIX = "__vs_"  # marks a side table's index, class or namespace beside a collection


def side_name(name: str) -> str:
    """Check a side-table name: lowercase letters, digits and ``_``, as every store accepts."""
    if not isinstance(name, str) or not _SIDE_NAME.match(name):
        raise ConfigError(
            f"side table names are 1-48 lowercase letters, digits or _ (a letter first), got {name!r}"
        )
    return name


def side_key_id(key: str, *, max_bytes: int = 512, ascii_only: bool = False) -> str:
    """The id a side-table row is stored under: the key itself where the store takes it.

    Stores bound ids (512 bytes in Elasticsearch, 512 ASCII characters in Pinecone); a key that
    does not fit is stored under a hash of itself, and the row keeps the key, which readers check.
    """
    if not isinstance(key, str):
        raise ConfigError(f"side table keys are strings, got {key!r}")
    raw = key.encode("utf-8")
    if len(raw) <= max_bytes and not key.startswith("~") and (not ascii_only or key.isascii()):
        return key
    return "~" + hashlib.sha256(raw).hexdigest()


def doc_json(key: str, doc: Mapping[str, Any]) -> str:
    """A side-table document as JSON text, or ``StoreError`` naming the key if it is not JSON."""
    from ..errors import StoreError

    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"side table row {key!r} is not JSON: {exc}") from exc


class RestClient:
    """A small JSON-over-HTTP client (httpx) with vendor errors translated into ours.

    The REST adapters (Elasticsearch, OpenSearch, Weaviate, Pinecone) talk to the databases'
    documented HTTP APIs through this one seam; ``transport`` accepts any ``httpx`` transport,
    which is how the tests check the requests built and the responses parsed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        vendor: str,
        extra: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        transport: Any = None,
        auth: Any = None,
        verify: Any = True,
    ) -> None:
        httpx = require("httpx", "httpx", extra)
        self.vendor = vendor
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=timeout,
            transport=transport,
            auth=auth,
            verify=verify,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        json_body: Any = None,
        content: bytes | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        ok_missing: bool = False,
    ) -> Any:
        """Send one request and return the decoded JSON (``None`` for 404 when ``ok_missing``)."""
        from ..errors import RecordRejectedError, StoreError, StoreUnavailableError

        try:
            resp = self._client.request(
                method, path, json=json_body, content=content, params=params, headers=headers
            )
        except self._httpx.TransportError as exc:
            raise StoreUnavailableError(
                f"{self.vendor} unavailable while trying to {action}: {exc}"
            ) from exc
        if resp.status_code == 404 and ok_missing:
            return None
        if resp.status_code >= 400:
            detail = resp.text[:500]
            exc2 = self._httpx.HTTPStatusError(detail, request=resp.request, response=resp)
            if resp.status_code in (408, 429) or resp.status_code >= 500:
                raise StoreUnavailableError(
                    f"{self.vendor} unavailable ({resp.status_code}) while trying to {action}: {detail}"
                ) from exc2
            if resp.status_code in (400, 413, 422):
                raise RecordRejectedError(
                    f"{self.vendor} rejected the request to {action} ({resp.status_code}): {detail}"
                ) from exc2
            raise StoreError(
                f"{self.vendor} failed to {action} ({resp.status_code}): {detail}"
            ) from exc2
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError as exc:
            raise StoreError(
                f"{self.vendor} sent a non-JSON answer to {action}: {resp.text[:200]}"
            ) from exc

    def close(self) -> None:
        self._client.close()


def flat_metadata(record: Record) -> dict[str, Any]:
    """Payload for stores with flat metadata (Chroma, Pinecone): scalars only, JSON for the rest.

    ``metadata`` keeps the record's metadata as JSON text so it reads back exactly; each scalar
    value is also stored flat as ``metadata.<key>``, which is what filters use.
    """
    meta: dict[str, Any] = {
        "source": record.source,
        "model": record.model,
        "start_offset": record.start,
        "end_offset": record.end,
        "chunk_index": record.chunk_index,
        "section_index": record.section_index,
        "headings": json.dumps(list(record.headings), ensure_ascii=False),
        "metadata": json.dumps(dict(record.metadata), ensure_ascii=False, default=str),
    }
    if record.page is not None:
        meta["page"] = record.page
    for key, value in record.metadata.items():
        if isinstance(value, str | int | float | bool):
            meta[f"metadata.{key}"] = value
    return meta


__all__ = [
    "ID_FIELD",
    "ID_NAMESPACE",
    "SIDE_PREFIX",
    "AdapterOptions",
    "RestClient",
    "adaptive_range",
    "as_query",
    "check_delete",
    "check_k",
    "check_range",
    "doc_json",
    "flat_metadata",
    "hit_of",
    "host_port",
    "last_wins",
    "payload_of",
    "pop_mode",
    "require",
    "rest_client",
    "scoped_items",
    "server_address",
    "settled_dim",
    "side_key_id",
    "side_name",
    "uuid_for",
    "where_items",
]
