"""In-memory servers speaking the slice of each vendor's HTTP API our adapters use.

Elasticsearch/OpenSearch, Weaviate and Pinecone cannot run on this machine, so their adapters are
tested at the HTTP seam: each fake here is an ``httpx.MockTransport`` handler that keeps state and
answers as the vendor documents it (scores, filters, paging, errors), so the shared contracts
(``check_contract``, ``check_side_table``) run against the adapters' real requests. Where the
vendor's behaviour matters to correctness, the fake keeps it: Elasticsearch searches see only
refreshed writes, Weaviate refuses properties its class lacks, Pinecone refuses all-zero vectors,
``null`` metadata and more than 40 KB of metadata a record.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _body(request: httpx.Request) -> Any:
    raw = request.content
    if not raw:
        return None
    if request.headers.get("content-type", "").startswith("application/x-ndjson"):
        return [json.loads(line) for line in raw.decode().splitlines() if line]
    return json.loads(raw)


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


class _Fake:
    """Routes by method and a path pattern; records every (method, path, body, request)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, httpx.Request]] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., httpx.Response]]] = []

    def route(self, method: str, pattern: str, handler: Callable[..., httpx.Response]) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = _body(request)
        path = request.url.path
        self.requests.append((request.method, path, body, request))
        for method, pattern, handler in self._routes:
            m = pattern.match(path)
            if m and method == request.method:
                return handler(request, body, *m.groups())
        return _json(404, {"error": f"no route for {request.method} {path}"})


# -- Elasticsearch / OpenSearch ----------------------------------------------------------------


def _field(source: dict[str, Any], path: str) -> list[Any]:
    """The values at a dotted path (a list field gives each element)."""
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def feature_weight(value: float) -> float:
    """A feature weight as Lucene's ``FeatureField`` keeps it (``sparse_vector``,
    ``rank_features``): the top 17 bits of its float32, truncated (9 significant bits)."""
    bits = np.array([value], dtype=np.float32).view(np.uint32) >> 15 << 15
    return float(bits.view(np.float32)[0])


class _Refused(Exception):
    """A request the engine answers with a 400 and this error."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.body = {"error": {"type": kind, "reason": reason}, "status": 400}


def _same(a: Any, b: Any) -> bool:
    """Equality as a typed store sees it: 1 equals 1.0, but not True and not "1"."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


class FakeSearchEngine(_Fake):
    """Elasticsearch 8.15+ (``flavor="elasticsearch"``) or OpenSearch 2 (``"opensearch"``).

    Searches and counts see the documents as of the last refresh, as in the real engines;
    ``_mget`` reads in real time. The vector field is a dense one (``dense_vector`` /
    ``knn_vector``) or a sparse one (``sparse_vector`` / ``rank_features``): sparse documents
    must have strictly positive normal weights, which are kept with 9 significant bits as Lucene
    keeps them, and the sparse queries (``sparse_vector``; linear ``rank_feature``) score the dot
    product over those kept weights. ``bool`` queries combine ``must``, ``filter``, ``should``
    (with ``minimum_should_match``) and ``must_not`` as the engines do; a search's ``min_score``
    drops lower scores.
    """

    def __init__(self, flavor: str = "elasticsearch") -> None:
        super().__init__()
        self.flavor = flavor
        es = flavor == "elasticsearch"
        self.dense_type = "dense_vector" if es else "knn_vector"
        self.sparse_type = "sparse_vector" if es else "rank_features"
        self.indices: dict[str, dict[str, Any]] = {}
        self.route("HEAD", r"/([^/_][^/]*)", self._head)
        self.route("PUT", r"/([^/_][^/]*)", self._create)
        self.route("GET", r"/([^/]+)/_mapping", self._mapping)
        self.route("POST", r"/_bulk", self._bulk)
        self.route("POST", r"/([^/]+)/_mget", self._mget)
        self.route("POST", r"/([^/]+)/_search", self._search)
        self.route("POST", r"/([^/]+)/_delete_by_query", self._delete_by_query)
        self.route("GET", r"/([^/]+)/_count", self._count)
        self.route("POST", r"/([^/]+)/_refresh", self._refresh)

    @staticmethod
    def _missing(name: str) -> httpx.Response:
        err = {"type": "index_not_found_exception", "reason": f"no such index [{name}]"}
        return _json(404, {"error": err, "status": 404})

    def _head(self, _req: httpx.Request, _body: Any, name: str) -> httpx.Response:
        return httpx.Response(200 if name in self.indices else 404)

    def _create(self, _req: httpx.Request, body: Any, name: str) -> httpx.Response:
        if name in self.indices:
            err = {"type": "resource_already_exists_exception", "reason": f"[{name}] exists"}
            return _json(400, {"error": err, "status": 400})
        props = body["mappings"].get("properties", {})
        emb = props.get("embedding")
        if emb is not None:
            if emb["type"] not in (self.dense_type, self.sparse_type):
                return _json(400, {"error": {"type": "mapper_parsing_exception"}, "status": 400})
            knn = (body.get("settings") or {}).get("index", {}).get("knn")
            if emb["type"] == "knn_vector" and not knn:
                return _json(400, {"error": {"type": "illegal_argument_exception"}, "status": 400})
        self.indices[name] = {"body": body, "docs": {}, "visible": {}}
        return _json(200, {"acknowledged": True, "index": name})

    def _mapping(self, _req: httpx.Request, _body: Any, name: str) -> httpx.Response:
        if name not in self.indices:
            return self._missing(name)
        return _json(200, {name: {"mappings": self.indices[name]["body"]["mappings"]}})

    @staticmethod
    def _vector_type(index: dict[str, Any]) -> str | None:
        emb = index["body"]["mappings"].get("properties", {}).get("embedding")
        return None if emb is None else str(emb["type"])

    def _dims(self, index: dict[str, Any]) -> int | None:
        if self._vector_type(index) != self.dense_type:
            return None
        emb = index["body"]["mappings"]["properties"]["embedding"]
        return int(emb.get("dims") or emb.get("dimension"))

    def _sparse_error(self, index: dict[str, Any], doc: dict[str, Any]) -> str | None:
        """Why a document's sparse field is refused: the engines take an object of feature
        name → strictly positive normal float (Lucene's ``FeatureField`` rule)."""
        if self._vector_type(index) != self.sparse_type or "embedding" not in doc:
            return None
        features = doc["embedding"]
        if not isinstance(features, dict):
            return "sparse field must be an object of feature name to weight"
        for name, value in features.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < np.finfo(np.float32).tiny:
                return f"feature [{name}] must be a positive normal float, got [{value}]"
        return None

    def _bulk(self, req: httpx.Request, lines: list[dict[str, Any]]) -> httpx.Response:
        items, i = [], 0
        touched: set[str] = set()
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            name, _id = meta["_index"], str(meta["_id"])
            touched.add(name)
            if op == "delete":
                i += 1
                index = self.indices.get(name)
                if index is None:
                    err = {"type": "index_not_found_exception", "reason": name}
                    items.append({op: {"_id": _id, "status": 404, "error": err}})
                elif index["docs"].pop(_id, None) is None:
                    items.append({op: {"_id": _id, "status": 404, "result": "not_found"}})
                else:
                    items.append({op: {"_id": _id, "status": 200, "result": "deleted"}})
                continue
            doc, i = lines[i + 1], i + 2
            if len(_id.encode()) > 512:
                err = {"type": "illegal_argument_exception", "reason": "id is too long"}
                items.append({op: {"_id": _id, "status": 400, "error": err}})
                continue
            index = self.indices.setdefault(
                name, {"body": {"mappings": {"properties": {}}}, "docs": {}, "visible": {}}
            )
            dims = self._dims(index)
            if dims is not None and len(doc.get("embedding") or []) != dims:
                err = {"type": "mapper_parsing_exception", "reason": "wrong vector dimension"}
                items.append({op: {"_id": _id, "status": 400, "error": err}})
                continue
            problem = self._sparse_error(index, doc)
            if problem is not None:
                err = {"type": "mapper_parsing_exception", "reason": problem}
                items.append({op: {"_id": _id, "status": 400, "error": err}})
                continue
            index["docs"][_id] = json.loads(json.dumps(doc))
            items.append({op: {"_id": _id, "status": 201, "result": "created"}})
        if req.url.params.get("refresh") in ("true", "wait_for"):
            for name in touched:
                self._refresh(req, None, name)
        errors = any("error" in next(iter(it.values())) for it in items)
        return _json(200, {"errors": errors, "items": items})

    def _mget(self, _req: httpx.Request, body: Any, name: str) -> httpx.Response:
        if name not in self.indices:
            return self._missing(name)
        docs = self.indices[name]["docs"]
        out = [
            {"_id": i, "found": True, "_source": docs[i]}
            if i in docs
            else {"_id": i, "found": False}
            for i in body["ids"]
        ]
        return _json(200, {"docs": out})

    def _score(
        self, name: str, _id: str, src: dict[str, Any], query: dict[str, Any]
    ) -> float | None:
        """The score of a document for ``query``, ``None`` where it does not match."""
        ((kind, arg),) = query.items()
        if kind == "match_all":
            return 1.0
        if kind == "ids":
            return 1.0 if _id in arg["values"] else None
        if kind == "bool":
            return self._bool(name, _id, src, arg)
        if kind == "sparse_vector":
            return self._sparse_vector(name, src, arg)
        if kind == "rank_feature":
            return self._rank_feature(name, src, arg)
        if kind not in ("term", "terms"):
            raise ValueError(f"query {kind} is not in this fake")
        ((field, wanted),) = arg.items()
        wanted = wanted if kind == "terms" else [wanted]
        return 1.0 if any(_same(v, w) for v in _field(src, field) for w in wanted) else None

    def _bool(self, name: str, _id: str, src: dict[str, Any], arg: dict[str, Any]) -> float | None:
        def each(key: str) -> list[float | None]:
            return [self._score(name, _id, src, q) for q in arg.get(key, [])]

        must, filters, should = each("must"), each("filter"), each("should")
        if None in must or None in filters or any(s is not None for s in each("must_not")):
            return None
        matched = [s for s in should if s is not None]
        # Without must or filter clauses, one should clause must match; with them, none need to.
        needed = arg.get("minimum_should_match", 0 if must or filters else 1 if should else 0)
        if len(matched) < int(needed):
            return None
        return float(sum(s for s in must if s is not None) + sum(matched))

    def _sparse_field(self, name: str, field: str) -> None:
        mapped = self.indices[name]["body"]["mappings"].get("properties", {}).get(field, {})
        if mapped.get("type") != self.sparse_type:
            raise _Refused("query_shard_exception", f"[{field}] is not a sparse field")

    @staticmethod
    def _dot(features: dict[str, Any], terms: dict[str, float]) -> float | None:
        shared = [t for t in terms if t in features]
        if not shared:
            return None
        # Lucene scores each term in float32 (the query weight times the kept feature weight)
        # and sums them in double; the search rounds the sum to float32.
        return sum(
            float(np.float32(terms[t]) * np.float32(feature_weight(features[t]))) for t in shared
        )

    def _sparse_vector(self, name: str, src: dict[str, Any], arg: dict[str, Any]) -> float | None:
        if self.flavor != "elasticsearch":
            raise _Refused("parsing_exception", "unknown query [sparse_vector]")
        self._sparse_field(name, arg["field"])
        if arg.get("prune") is not False:
            # Indices made by 8.19/9.1+ prune query terms unless the query says not to.
            raise ValueError("query-term pruning is not in this fake: send prune: false")
        terms = {str(t): float(w) for t, w in arg["query_vector"].items()}
        return self._dot(src.get(arg["field"]) or {}, terms)

    def _rank_feature(self, name: str, src: dict[str, Any], arg: dict[str, Any]) -> float | None:
        field, _, feature = arg["field"].rpartition(".")
        self._sparse_field(name, field)
        if self.flavor != "opensearch" or set(arg) - {"field", "boost", "linear"}:
            raise ValueError(f"rank_feature {sorted(arg)} is not in this fake (linear only)")
        if "linear" not in arg:
            raise ValueError("the default saturation function is not in this fake")
        return self._dot(src.get(field) or {}, {feature: float(arg.get("boost", 1.0))})

    def _matches(self, name: str, _id: str, src: dict[str, Any], query: dict[str, Any]) -> bool:
        return self._score(name, _id, src, query) is not None

    def _hits(self, name: str, query: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        visible = self.indices[name]["visible"]
        return [
            (i, src)
            for i, src in visible.items()
            if query is None or self._matches(name, i, src, query)
        ]

    def _search(self, _req: httpx.Request, body: Any, name: str) -> httpx.Response:
        if name not in self.indices:
            return self._missing(name)
        try:
            return self._searched(body, name)
        except _Refused as exc:
            return _json(400, exc.body)

    def _searched(self, body: Any, name: str) -> httpx.Response:
        size = int(body.get("size", 10))
        if size > 10_000:  # index.max_result_window
            raise _Refused("illegal_argument_exception", "Result window is too large")
        found: list[tuple[float, str, dict[str, Any], list[Any] | None]] = []
        knn = body.get("knn")
        os_knn = (body.get("query") or {}).get("knn")
        if knn is not None or os_knn is not None:
            if knn is not None:
                vector, k = knn["query_vector"], knn["k"]
                flt = {"bool": {"filter": knn.get("filter", [])}}
                min_cos = knn.get("similarity")  # on the raw cosine, not the _score
                min_score = None if min_cos is None else (1 + min_cos) / 2
                if k > 10_000 or int(knn["num_candidates"]) < k:
                    return _json(400, {"error": {"type": "illegal_argument_exception"}})
            else:
                clause = os_knn["embedding"]
                vector, k = clause["vector"], clause.get("k")
                flt = clause.get("filter") or {"match_all": {}}
                min_score = clause.get("min_score")  # radial search: on the _score
            for i, src in self._hits(name, flt):
                score = (1 + _cosine(vector, src["embedding"])) / 2  # cosine as both score it
                if min_score is None or score >= min_score:
                    found.append((score, i, src, None))
            found.sort(key=lambda t: -t[0])
            found = found[: int(k)] if k is not None else found
        elif "sort" in body:
            ((field, _order),) = body["sort"][0].items()
            for i, src in self._hits(name, body.get("query")):
                found.append((1.0, i, src, _field(src, field)[:1]))
            found.sort(key=lambda t: t[3])
            if "search_after" in body:
                found = [t for t in found if t[3] > body["search_after"]]
        else:  # by score, best first; ties in index order, as one shard breaks them
            floor = body.get("min_score")
            for i, src in self.indices[name]["visible"].items():
                score = self._score(name, i, src, body.get("query") or {"match_all": {}})
                if score is not None:
                    score = float(np.float32(score))  # a _score is a float32
                    if floor is None or score >= floor:
                        found.append((score, i, src, None))
            found.sort(key=lambda t: -t[0])
        source = body.get("_source", True)
        excludes = source.get("excludes", []) if isinstance(source, dict) else []
        out = []
        for score, i, src, sort in found[:size]:
            hit: dict[str, Any] = {"_index": name, "_id": i, "_score": score}
            if source is not False:
                hit["_source"] = {k: v for k, v in src.items() if k not in excludes}
            if sort is not None:
                hit["sort"] = sort
            out.append(hit)
        return _json(200, {"hits": {"hits": out}})

    def _delete_by_query(self, req: httpx.Request, body: Any, name: str) -> httpx.Response:
        if name not in self.indices:
            return self._missing(name)
        gone = [i for i, _src in self._hits(name, body["query"])]
        for i in gone:
            self.indices[name]["docs"].pop(i, None)
        if req.url.params.get("refresh") == "true":
            self._refresh(req, None, name)
        return _json(200, {"deleted": len(gone)})

    def _count(self, _req: httpx.Request, _body: Any, name: str) -> httpx.Response:
        if name not in self.indices:
            return self._missing(name)
        return _json(200, {"count": len(self.indices[name]["visible"])})

    def _refresh(self, _req: httpx.Request, _body: Any, name: str) -> httpx.Response:
        index = self.indices[name]
        index["visible"] = {i: json.loads(json.dumps(d)) for i, d in index["docs"].items()}
        return _json(200, {"_shards": {"failed": 0}})


# -- Weaviate ----------------------------------------------------------------------------------

_GQL = re.compile(
    r'\s*(?:(?P<p>[{}()\[\]:,])|(?P<s>"(?:[^"\\]|\\.)*")'
    r"|(?P<n>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<w>[_A-Za-z][_0-9A-Za-z]*))"
)


class _Enum(str):
    pass


class _GraphQL:
    """A parser for the GraphQL our adapter sends: selections, arguments and input literals."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, Any]] = []
        pos, text = 0, text.rstrip()
        while pos < len(text):
            m = _GQL.match(text, pos)
            if m is None:
                raise ValueError(f"bad GraphQL at {text[pos : pos + 20]!r}")
            pos = m.end()
            kind = m.lastgroup or ""
            raw = m.group(kind)
            value: Any = {"s": lambda r: json.loads(r), "n": lambda r: json.loads(r)}.get(
                kind, lambda r: r
            )(raw)
            self.tokens.append((kind, value))
        self.at = 0

    def _next(self, expect: str | None = None) -> Any:
        _kind, value = self.tokens[self.at]
        self.at += 1
        if expect is not None and value != expect:
            raise ValueError(f"expected {expect!r}, got {value!r}")
        return value

    def _peek(self) -> Any:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def selections(self) -> list[tuple[str, dict[str, Any], Any]]:
        self._next("{")
        out = []
        while self._peek() != "}":
            name = self._next()
            args = self._args() if self._peek() == "(" else {}
            sub = self.selections() if self._peek() == "{" else None
            out.append((name, args, sub))
        self._next("}")
        return out

    def _args(self) -> dict[str, Any]:
        self._next("(")
        args = {}
        while self._peek() != ")":
            if self._peek() == ",":
                self._next()
                continue
            name = self._next()
            self._next(":")
            args[name] = self._value()
        self._next(")")
        return args

    def _value(self) -> Any:
        kind, value = self.tokens[self.at]
        if value == "{" and kind == "p":
            self._next()
            obj = {}
            while self._peek() != "}":
                if self._peek() == ",":
                    self._next()
                    continue
                key = self._next()
                self._next(":")
                obj[key] = self._value()
            self._next("}")
            return obj
        if value == "[" and kind == "p":
            self._next()
            items = []
            while self._peek() != "]":
                if self._peek() == ",":
                    self._next()
                    continue
                items.append(self._value())
            self._next("]")
            return items
        self._next()
        if kind == "w":
            return {"true": True, "false": False, "null": None}.get(value, _Enum(value))
        return value


class FakeWeaviate(_Fake):
    """Weaviate 1.2x: schema, batch objects, GraphQL ``Get``/``Aggregate``, batch deletes."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: dict[str, dict[str, Any]] = {}
        self.route("GET", r"/v1/schema/(\w+)", self._schema)
        self.route("POST", r"/v1/schema", self._create)
        self.route("POST", r"/v1/schema/(\w+)/properties", self._add_property)
        self.route("GET", r"/v1/objects", self._list)
        self.route("POST", r"/v1/batch/objects", self._batch)
        self.route("DELETE", r"/v1/batch/objects", self._delete)
        self.route("POST", r"/v1/graphql", self._graphql)

    def _schema(self, _req: httpx.Request, _body: Any, name: str) -> httpx.Response:
        if name not in self.classes:
            return _json(404, {})
        return _json(200, self.classes[name]["schema"])

    def _create(self, _req: httpx.Request, body: Any) -> httpx.Response:
        name = body["class"]
        if name in self.classes:
            return _json(422, {"error": [{"message": f"class name {name!r} already exists"}]})
        self.classes[name] = {"schema": json.loads(json.dumps(body)), "objects": {}}
        return _json(200, body)

    def _add_property(self, _req: httpx.Request, body: Any, name: str) -> httpx.Response:
        self.classes[name]["schema"]["properties"].append(body)
        return _json(200, body)

    def _list(self, req: httpx.Request, _body: Any) -> httpx.Response:
        cls = self.classes.get(req.url.params["class"], {"objects": {}})
        objs = sorted(cls["objects"].items())[: int(req.url.params.get("limit", 25))]
        return _json(200, {"objects": [{"id": i, **o} for i, o in objs]})

    def _batch(self, _req: httpx.Request, body: Any) -> httpx.Response:
        out = []
        for obj in body["objects"]:
            cls = self.classes.get(obj["class"])
            errors = []
            if cls is None:
                errors.append({"message": f"class {obj['class']} does not exist"})
            else:
                props = {p["name"] for p in cls["schema"]["properties"]}
                unknown = sorted(set(obj["properties"]) - props)
                if unknown:
                    errors.append({"message": f"no such prop with name {unknown[0]!r}"})
                vec = obj.get("vector")
                lengths = {len(o["vector"]) for o in cls["objects"].values() if o.get("vector")}
                if vec and lengths and len(vec) not in lengths:
                    errors.append({"message": "vector lengths don't match"})
            if not errors and cls is not None:
                cls["objects"][obj["id"]] = {
                    "properties": json.loads(json.dumps(obj["properties"])),
                    "vector": obj.get("vector"),
                }
            out.append({**obj, "result": {"errors": {"error": errors}} if errors else {}})
        return _json(200, out)

    @staticmethod
    def _where(uid: str, props: dict[str, Any], where: dict[str, Any]) -> bool:
        op = where["operator"]
        if op == "And":
            return all(FakeWeaviate._where(uid, props, w) for w in where["operands"])
        if op == "Or":
            return any(FakeWeaviate._where(uid, props, w) for w in where["operands"])
        (path,) = where["path"]
        actual = uid if path == "id" else props.get(path)
        if op == "ContainsAny":
            return actual in where["valueTextArray"]
        if op == "Equal":
            key = next(k for k in where if k.startswith("value"))
            return actual is not None and _same(actual, where[key])
        raise ValueError(f"operator {op} is not in this fake")

    def _delete(self, _req: httpx.Request, body: Any) -> httpx.Response:
        cls = self.classes[body["match"]["class"]]
        gone = [
            uid
            for uid, o in cls["objects"].items()
            if self._where(uid, o["properties"], body["match"]["where"])
        ]
        for uid in gone:
            del cls["objects"][uid]
        return _json(200, {"results": {"matches": len(gone), "successful": len(gone)}})

    def _graphql(self, _req: httpx.Request, body: Any) -> httpx.Response:
        ((op, _, classes),) = _GraphQL(body["query"]).selections()
        ((name, args, fields),) = classes
        if name not in self.classes:
            msg = f'Cannot query field "{name}" on type "{op}ObjectsObj".'
            return _json(200, {"errors": [{"message": msg}]})
        objects = self.classes[name]["objects"]
        if op == "Aggregate":
            return _json(200, {"data": {op: {name: [{"meta": {"count": len(objects)}}]}}})
        rows = sorted(objects.items())
        if "where" in args:
            rows = [(u, o) for u, o in rows if self._where(u, o["properties"], args["where"])]
        dist: dict[str, float] = {}
        if "after" in args:
            if "where" in args or "nearVector" in args:
                return _json(
                    200, {"errors": [{"message": "cursor api: where or near not allowed"}]}
                )
            rows = [(u, o) for u, o in rows if u > args["after"]]
        if "nearVector" in args:
            near = args["nearVector"]
            for u, o in rows:
                dist[u] = 1.0 - _cosine(near["vector"], o["vector"])
            rows.sort(key=lambda r: dist[r[0]])
            if "distance" in near:
                rows = [(u, o) for u, o in rows if dist[u] <= near["distance"]]
        rows = rows[: int(args.get("limit", 10))]
        out = []
        for uid, o in rows:
            row: dict[str, Any] = {}
            for field, _a, sub in fields:
                if field == "_additional":
                    extra = {"id": uid, "distance": dist.get(uid)}
                    row[field] = {f: extra[f] for f, _x, _y in sub}
                else:
                    row[field] = o["properties"].get(field)
            out.append(row)
        return _json(200, {"data": {op: {name: out}}})


# -- Pinecone ----------------------------------------------------------------------------------


class FakePinecone(_Fake):
    """A Pinecone index (data plane, API 2025-04) of one dimension and the cosine metric."""

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        super().__init__()
        self.dim, self.metric = dim, metric
        self.namespaces: dict[str, dict[str, dict[str, Any]]] = {}
        self.route("POST", r"/describe_index_stats", self._stats)
        self.route("POST", r"/vectors/upsert", self._upsert)
        self.route("POST", r"/query", self._query)
        self.route("GET", r"/vectors/fetch", self._fetch)
        self.route("POST", r"/vectors/delete", self._delete)
        self.route("GET", r"/vectors/list", self._list)

    @staticmethod
    def _bad(message: str) -> httpx.Response:
        return _json(400, {"code": 3, "message": message})

    def _stats(self, _req: httpx.Request, _body: Any) -> httpx.Response:
        spaces = {ns: {"vectorCount": len(v)} for ns, v in self.namespaces.items() if v}
        total = sum(s["vectorCount"] for s in spaces.values())
        return _json(
            200,
            {
                "dimension": self.dim,
                "metric": self.metric,
                "namespaces": spaces,
                "totalVectorCount": total,
            },
        )

    def _upsert(self, _req: httpx.Request, body: Any) -> httpx.Response:
        space = self.namespaces.setdefault(body.get("namespace", ""), {})
        for v in body["vectors"]:
            values, meta = v["values"], v.get("metadata") or {}
            if len(v["id"]) > 512 or not v["id"].isascii():
                return self._bad(f"id {v['id'][:40]!r} must be ASCII, at most 512 characters")
            if len(values) != self.dim:
                return self._bad(
                    f"Vector dimension {len(values)} does not match the dimension of the index {self.dim}"
                )
            if not any(values) or not all(math.isfinite(x) for x in values):
                return self._bad("Dense vectors must contain at least one non-zero value")
            for key, value in meta.items():
                ok = isinstance(value, str | int | float | bool) or (
                    isinstance(value, list) and all(isinstance(x, str) for x in value)
                )
                if not ok:
                    return self._bad(
                        f"Metadata value for field {key!r} must be a string, number, boolean or list of strings"
                    )
            if len(json.dumps(meta).encode()) > 40_960:
                return self._bad("Metadata size exceeds the limit of 40960 bytes per vector")
        for v in body["vectors"]:
            space[v["id"]] = {
                "values": list(v["values"]),
                "metadata": dict(v.get("metadata") or {}),
            }
        return _json(200, {"upsertedCount": len(body["vectors"])})

    @staticmethod
    def _filter(meta: dict[str, Any], flt: dict[str, Any]) -> bool:
        for key, cond in flt.items():
            if key == "$and":
                if not all(FakePinecone._filter(meta, f) for f in cond):
                    return False
                continue
            if key == "$or":
                if not any(FakePinecone._filter(meta, f) for f in cond):
                    return False
                continue
            cond = cond if isinstance(cond, dict) else {"$eq": cond}
            ((op, arg),) = cond.items()
            allowed = arg if op == "$in" else [arg]
            if op not in ("$eq", "$in"):
                raise ValueError(f"operator {op} is not in this fake")
            if key not in meta or not any(_same(meta[key], a) for a in allowed):
                return False
        return True

    def _query(self, _req: httpx.Request, body: Any) -> httpx.Response:
        top_k = int(body["topK"])
        if not 1 <= top_k <= 10_000:
            return self._bad("topK must be between 1 and 10000")
        if len(body["vector"]) != self.dim:
            return self._bad("Query vector dimension does not match the index")
        space = self.namespaces.get(body.get("namespace", ""), {})
        flt = body.get("filter")
        found = [
            (_cosine(body["vector"], v["values"]), i, v)
            for i, v in space.items()
            if flt is None or self._filter(v["metadata"], flt)
        ]
        found.sort(key=lambda t: -t[0])
        matches = []
        for score, i, v in found[:top_k]:
            m: dict[str, Any] = {"id": i, "score": score}
            if body.get("includeMetadata"):
                m["metadata"] = v["metadata"]
            matches.append(m)
        return _json(200, {"matches": matches, "namespace": body.get("namespace", "")})

    def _fetch(self, req: httpx.Request, _body: Any) -> httpx.Response:
        ns = req.url.params.get("namespace", "")
        space = self.namespaces.get(ns, {})
        ids = req.url.params.get_list("ids")
        vectors = {i: {"id": i, **space[i]} for i in ids if i in space}
        return _json(200, {"vectors": vectors, "namespace": ns})

    def _delete(self, _req: httpx.Request, body: Any) -> httpx.Response:
        space = self.namespaces.get(body.get("namespace", ""), {})
        if "ids" in body:
            for i in body["ids"]:
                space.pop(i, None)
        elif "filter" in body:
            for i in [i for i, v in space.items() if self._filter(v["metadata"], body["filter"])]:
                del space[i]
        return _json(200, {})

    def _list(self, req: httpx.Request, _body: Any) -> httpx.Response:
        space = self.namespaces.get(req.url.params.get("namespace", ""), {})
        limit = int(req.url.params.get("limit", 100))
        token = req.url.params.get("paginationToken")
        ids = sorted(i for i in space if token is None or i > token)
        page = ids[:limit]
        answer: dict[str, Any] = {"vectors": [{"id": i} for i in page]}
        if len(ids) > limit:
            answer["pagination"] = {"next": page[-1]}
        return _json(200, answer)


__all__ = ["FakePinecone", "FakeSearchEngine", "FakeWeaviate", "feature_weight"]
