"""Embedding kinds in Elasticsearch and OpenSearch: how an index records its kind, the sparse
field, the sparse query, and the exact scores a sparse search returns.

An index notes its kind and width in its mapping's ``_meta`` (``vectorstream.kind``,
``vectorstream.dim``: for sparse, the vocabulary size, which the engines do not keep). The
``embedding`` field's type says the kind too, and is what is read back from an index made before
``_meta`` was written; where both are there they must agree.

A sparse record's ``embedding`` is an object of feature name → weight, the token id (as a
string) naming the feature: a ``sparse_vector`` field in Elasticsearch (8.15+), ``rank_features``
in OpenSearch (1.1+). Both engines hold strictly positive weights only: zero weights are left out
(they add nothing to a dot product), as are weights below float32's smallest normal number
(1.2e-38, which the engines refuse); a record with a negative weight is set aside.

Searches score by the dot product: Elasticsearch's ``sparse_vector`` query with ``prune: false``
(from 8.19/9.1, new indices prune query terms by default, which would make the score
approximate); OpenSearch's ``rank_feature`` queries with the ``linear`` function and the query
weight as ``boost``, one per query term in a ``bool`` ``should`` (core OpenSearch since 1.1; the
neural-search plugin's ``neural_sparse`` query with ``query_tokens`` scores the same way but
needs the plugin, which minimal distributions lack; it is documented from 2.14). Filters go in
the ``bool``'s ``filter``, which does not score.

Both engines store a feature's weight in 9 significant bits (Lucene's ``FeatureField`` keeps the
top 17 bits of the float32, truncating), so their score is the dot product low by less than
2⁻⁸ (0.4%). The exact weights are kept as well, in ``embedding_weights`` (an object mapped with
``enabled: false``: in ``_source``, not indexed; Elasticsearch 9.2+ leaves vector fields out of
``_source``, and this one is not a vector field), and the candidates the engine returns are
scored again exactly here. The candidate pool grows until no document left out could rank in
the top k: one the engine scored at most s′ has an exact score below s′ / (1 − 2⁻⁸).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..types import EmbeddingKind, Record, SparseVector
from ._common import payload_of
from ._kinds import DIM_KEY, KIND_KEY, sparse_scores
from ._records import vector_problems

log = logging.getLogger("vectorstream.stores.elasticsearch")

MAX_CANDIDATES = 10_000  # both engines cap num_candidates, k and a search's size at 10,000
WEIGHTS = "embedding_weights"  # a sparse record's exact term ids and weights
FEATURE_LOSS = 2.0**-8  # the most a stored feature weight loses, relative (9 significant bits)
_SLACK = 1e-6  # relative: each term is scored in float32, the sum rounded to float32
_TINY = float(np.finfo(np.float32).tiny)


# -- the mapping ---------------------------------------------------------------------------

BASE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "keyword"},
    "text": {"type": "text"},
    "source": {"type": "keyword"},
    "model": {"type": "keyword"},
    "page": {"type": "integer"},
    "start_offset": {"type": "integer"},
    "end_offset": {"type": "integer"},
    "chunk_index": {"type": "integer"},
    "section_index": {"type": "integer"},
    "headings": {"type": "keyword"},
    "metadata": {"type": "object", "dynamic": True},
}
# Metadata strings as keywords: a filter compares exact values, not analysed text.
DYNAMIC_TEMPLATES: list[dict[str, Any]] = [
    {
        "metadata_strings": {
            "path_match": "metadata.*",
            "match_mapping_type": "string",
            "mapping": {"type": "keyword"},
        }
    }
]


def kind_meta(kind: EmbeddingKind, dim: int) -> dict[str, Any]:
    """The ``_meta`` of a new index of ``kind`` and width ``dim``."""
    return {KIND_KEY: kind, DIM_KEY: int(dim)}


def index_body(
    kind: EmbeddingKind, dim: int, vector: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The body that creates an index of ``kind``: the record fields, the ``vector`` fields'
    mappings, ``_meta`` and the engine's ``settings`` (if any)."""
    body: dict[str, Any] = {
        "mappings": {
            "_meta": kind_meta(kind, dim),
            "dynamic_templates": json.loads(json.dumps(DYNAMIC_TEMPLATES)),
            "properties": {**json.loads(json.dumps(BASE_PROPERTIES)), **vector},
        }
    }
    if settings:
        body["settings"] = dict(settings)
    return body


def sparse_properties(sparse_type: str) -> dict[str, Any]:
    """The mapping of a sparse index's ``embedding`` and of the exact weights beside it."""
    return {"embedding": {"type": sparse_type}, WEIGHTS: {"type": "object", "enabled": False}}


def stored_kind(
    what: str,
    mappings: Mapping[str, Any],
    *,
    dense_type: str,
    sparse_type: str,
    dense_dim: Callable[[dict[str, Any]], int | None],
) -> tuple[EmbeddingKind, int | None] | None:
    """The kind and width of an existing index, or ``None`` when it has no ``embedding`` field.

    ``StoreError`` (naming ``what``) for a field of another type, or a ``_meta`` kind that
    disagrees with the field.
    """
    field = (mappings.get("properties") or {}).get("embedding")
    if field is None:
        return None
    meta = mappings.get("_meta") or {}
    ftype = field.get("type")
    kind: EmbeddingKind
    if ftype == dense_type:
        kind, dim = "dense", dense_dim(field)
    elif ftype == sparse_type:
        raw = meta.get(DIM_KEY)
        kind, dim = (
            "sparse",
            int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None,
        )
    else:
        raise StoreError(
            f"{what} has an 'embedding' field of type {ftype!r}; vectorstream keeps a "
            f"{dense_type} (dense) or a {sparse_type} (sparse) there"
        )
    noted = meta.get(KIND_KEY)
    if noted is not None and noted != kind:
        raise StoreError(
            f"{what}'s mapping notes {noted} embeddings, but its 'embedding' field is a {ftype} "
            f"({kind}); it was not written by vectorstream"
        )
    return kind, dim


# -- records -------------------------------------------------------------------------------


def _held(sv: SparseVector) -> tuple[np.ndarray, np.ndarray]:
    """The terms an engine holds: those of weight at least float32's smallest normal number."""
    keep = sv.values >= _TINY
    return sv.indices[keep], sv.values[keep]


def record_problems(
    kind: EmbeddingKind, records: Sequence[Record], dim: int | None, vendor: str
) -> list[str | None]:
    """Per record, why it cannot go into an index of ``kind`` (another kind; in a sparse index,
    an invalid vector or a negative weight), or ``None``. Dense vectors are checked by the
    engine itself (a wrong dimension comes back per item)."""
    if kind == "dense":
        return [
            None
            if r.embedding.kind == "dense"
            else f"this collection holds dense embeddings, not {r.embedding.kind}"
            for r in records
        ]
    problems = vector_problems(records, dim, kind=kind)
    for i, r in enumerate(records):
        sv = r.embedding.sparse
        if problems[i] is None and sv is not None and bool(np.any(sv.values < 0)):
            problems[i] = f"sparse vector has negative weights; {vendor} holds positive ones only"
    return problems


def document(r: Record) -> dict[str, Any]:
    """The document of a record: our id, the stored fields and its vector fields."""
    doc = {"id": r.id, **payload_of(r)}
    if r.embedding.sparse is not None:
        doc.update(sparse_fields(r.embedding.sparse))
    else:
        doc["embedding"] = np.asarray(r.embedding.as_dense(), dtype=np.float32).tolist()
    return doc


def sparse_fields(sv: SparseVector) -> dict[str, Any]:
    """A sparse record's vector fields: the features (token id → weight) and the exact weights."""
    idx, val = _held(sv)
    ids = [int(i) for i in idx]
    weights = [float(v) for v in val]  # float32 values, exactly as doubles
    return {
        "embedding": {str(i): w for i, w in zip(ids, weights, strict=True)},
        WEIGHTS: {"indices": ids, "values": weights},
    }


# -- queries -------------------------------------------------------------------------------


def query_terms(q: SparseVector, vendor: str) -> dict[str, float]:
    """The query's terms as features (token id → weight), or ``ConfigError`` for a query the
    engines cannot score (a negative weight, no positive one)."""
    if bool(np.any(q.values < 0)):
        raise ConfigError(
            f"{vendor} scores sparse queries of non-negative weights only; this one has negative ones"
        )
    idx, val = _held(q)
    if idx.size == 0:
        raise ConfigError("the sparse query has no positive weight: it matches nothing")
    return {str(int(i)): float(v) for i, v in zip(idx, val, strict=True)}


def es_sparse_query(terms: Mapping[str, float], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Elasticsearch: the ``sparse_vector`` query, unpruned, under the filters."""
    clause = {"sparse_vector": {"field": "embedding", "query_vector": dict(terms), "prune": False}}
    return {"bool": {"must": [clause], "filter": filters}}


def os_sparse_query(terms: Mapping[str, float], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenSearch: one linear ``rank_feature`` per term, boosted by its weight, summed by a
    ``bool`` that needs one of them to match (a filter alone would admit every document)."""
    should = [
        {"rank_feature": {"field": f"embedding.{t}", "linear": {}, "boost": w}}
        for t, w in terms.items()
    ]
    return {"bool": {"should": should, "minimum_should_match": 1, "filter": filters}}


def sparse_body(query: dict[str, Any], size: int, cut: float) -> dict[str, Any]:
    """A search for the ``size`` best documents by the engine's score, without those that
    cannot score ``cut`` exactly (``min_score``: the engine's score is low by less than 2⁻⁸)."""
    body: dict[str, Any] = {
        "size": size,
        "query": query,
        "_source": {"excludes": ["embedding"]},  # the exact weights come with the rest
        "track_total_hits": False,  # lets the engine skip documents that cannot compete
    }
    if math.isfinite(cut) and cut > 0:  # (every matching document scores above 0)
        body["min_score"] = cut * (1.0 - FEATURE_LOSS) * (1.0 - _SLACK)
    return body


# -- exact scores --------------------------------------------------------------------------


def rescored(q: SparseVector, hits: Sequence[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """The engine's hits with their exact dot products, best first (a hit without exact weights,
    written by something else, keeps the engine's score)."""
    exact: list[float] = [float(h.get("_score") or 0.0) for h in hits]
    owners, idx, val, lengths = [], [], [], []
    for n, h in enumerate(hits):
        terms = (h.get("_source") or {}).get(WEIGHTS)
        if isinstance(terms, dict) and "indices" in terms and "values" in terms:
            owners.append(n)
            idx.append(np.asarray(terms["indices"], dtype=np.int64))
            val.append(np.asarray(terms["values"], dtype=np.float32))
            lengths.append(idx[-1].size)
    if owners:
        scores = sparse_scores(q, np.concatenate(idx), np.concatenate(val), np.array(lengths))
        for n, s in zip(owners, scores, strict=True):
            exact[n] = float(s)
    order = sorted(range(len(hits)), key=lambda n: -exact[n])
    return [(exact[n], hits[n]) for n in order]


def exact_top(
    q: SparseVector,
    k: int,
    fetch: Callable[[int], list[dict[str, Any]]],
    *,
    cut: float = -math.inf,
) -> list[tuple[float, dict[str, Any]]]:
    """The ``k`` best documents by exact dot product, from engine candidates.

    ``fetch(size)`` returns the engine's ``size`` best hits. The pool grows (×4, up to
    ``MAX_CANDIDATES``) until it is complete or no document left out could rank in the top
    ``k`` or reach ``cut``: one scored at most s′ by the engine is below s′ / (1 − 2⁻⁸) exactly.
    """
    k = min(k, MAX_CANDIDATES)
    size = min(MAX_CANDIDATES, 2 * k + 10)
    while True:
        page = fetch(size)
        ranked = rescored(q, page)
        if len(page) < size:
            return ranked[:k]
        lowest = min(float(h.get("_score") or 0.0) for h in page)
        bound = lowest / (1.0 - FEATURE_LOSS) * (1.0 + _SLACK)
        kth = ranked[k - 1][0] if len(ranked) >= k else -math.inf
        if bound <= max(kth, cut):
            return ranked[:k]
        if size >= MAX_CANDIDATES:
            log.warning(
                "sparse search: %d candidates do not settle the top %d exactly; the order near "
                "the last hits may be off by up to 0.4%% of a score",
                size,
                k,
            )
            return ranked[:k]
        size = min(MAX_CANDIDATES, 4 * size)


__all__ = [
    "BASE_PROPERTIES",
    "DYNAMIC_TEMPLATES",
    "FEATURE_LOSS",
    "MAX_CANDIDATES",
    "WEIGHTS",
    "document",
    "es_sparse_query",
    "exact_top",
    "index_body",
    "kind_meta",
    "os_sparse_query",
    "query_terms",
    "record_problems",
    "rescored",
    "sparse_body",
    "sparse_fields",
    "sparse_properties",
    "stored_kind",
]
