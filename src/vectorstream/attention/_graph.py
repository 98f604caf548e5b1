"""A RoarGraph-style key graph for one KV head, searched with the DIPR rule (numpy).

Queries and keys of an attention head are out of distribution for each other: the keys a query
attends to are not close to each other in key space. The graph therefore learns its edges from
queries: each sampled query is linked to its exact top keys, and the keys one query wants are linked
to that query's best key (the bipartite graph projected onto keys). Nearest keys in L2 are added so
every key has out-edges, candidates are pruned with the relative-neighbourhood rule, edges are made
two-way where there is room, and unreachable keys are linked in until every key can be reached.

Under GQA one graph serves a KV head: it is built from the queries of every query head of its group.

The search is written twice: in numpy (``search_numpy``, the reference) and compiled with numba
(``_graph_jit``, used by ``search`` and ``search_many`` when numba is installed and the keys are
float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._dipr import within
from ..errors import ConfigError
from . import _graph_jit

__all__ = ["GraphSearchResult", "KeyGraph"]

_BLOCK = 1024  # rows per block of the dense score matrices, bounding build memory


@dataclass(frozen=True)
class GraphSearchResult:
    """Keys a DIPR graph search returned (ascending positions), their scores, and keys scored."""

    indices: np.ndarray
    scores: np.ndarray
    touched: int


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest entries, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


@dataclass(frozen=True)
class KeyGraph:
    """Adjacency of a key graph: ``neighbors`` (n, R) int32 padded with −1, and entry points."""

    neighbors: np.ndarray
    entries: np.ndarray
    # Derived once: whether each row's padding follows its neighbours, and starting candidates.
    _packed: bool = field(init=False, repr=False, compare=False)
    _starts: dict[int, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The compiled search indexes without bounds checks: a graph must be sound to be searched.
        nbr = np.ascontiguousarray(self.neighbors, dtype=np.int32)
        entries = np.ascontiguousarray(self.entries, dtype=np.int32).reshape(-1)
        if nbr.ndim != 2 or nbr.shape[0] == 0:
            raise ConfigError(f"graph neighbors must be a non-empty (n, R) array, got {nbr.shape}")
        n = nbr.shape[0]
        if nbr.size and (int(nbr.min()) < -1 or int(nbr.max()) >= n):
            raise ConfigError(f"graph neighbors must be positions in [0, {n}) or -1 (padding)")
        if entries.size and (int(entries.min()) < 0 or int(entries.max()) >= n):
            raise ConfigError(f"graph entries must be positions in [0, {n})")
        object.__setattr__(self, "neighbors", nbr)
        object.__setattr__(self, "entries", entries)
        valid = nbr >= 0
        object.__setattr__(self, "_packed", bool((valid[:, 1:] <= valid[:, :-1]).all()))
        object.__setattr__(self, "_starts", {})

    @property
    def size(self) -> int:
        return int(self.neighbors.shape[0])

    @classmethod
    def build(
        cls,
        keys: np.ndarray,
        queries: np.ndarray | None = None,
        *,
        degree: int = 32,
        query_k: int = 64,
        key_k: int = 8,
        slack: int = 8,
        prune: float = 1.2,
        entry_count: int = 32,
        seed: int = 0,
    ) -> KeyGraph:
        """Build the graph over ``keys`` (n, d) from sampled ``queries`` (m, d).

        Without queries (a context imported as bare K/V) the graph is a pruned L2 k-NN graph.
        ``degree`` bounds pruned out-edges; ``slack`` more slots take reverse and repair edges.
        """
        k = np.ascontiguousarray(keys, dtype=np.float32)
        if k.ndim != 2 or k.shape[0] == 0:
            raise ConfigError(f"keys must be a non-empty (n, d) array, got {k.shape}")
        n = k.shape[0]
        rng = np.random.default_rng(seed)
        if n == 1:
            return cls(np.full((1, 1), -1, dtype=np.int32), np.zeros(1, dtype=np.int32))
        sq = np.einsum("nd,nd->n", k, k)

        src_parts: list[np.ndarray] = []
        dst_parts: list[np.ndarray] = []
        anchors = np.zeros(n, dtype=np.int64)  # how often each key is some query's best key
        # 1. Query-driven edges: the best key of a query points at the query's other top keys.
        if queries is not None and len(queries) > 0:
            q = np.ascontiguousarray(queries, dtype=np.float32)
            for start in range(0, q.shape[0], _BLOCK):
                top = _top_k_rows(q[start : start + _BLOCK] @ k.T, query_k + 1)
                src_parts.append(np.repeat(top[:, 0], top.shape[1] - 1))
                anchors += np.bincount(top[:, 0], minlength=n)
                dst_parts.append(top[:, 1:].reshape(-1))
        # 2. Nearest keys in L2, so keys no query prefers still have out-edges.
        knn = np.empty((n, min(key_k, n - 1)), dtype=np.int64)
        for start in range(0, n, _BLOCK):
            block = k[start : start + _BLOCK]
            d2 = sq[start : start + _BLOCK, None] - 2.0 * (block @ k.T) + sq[None, :]
            rows = np.arange(block.shape[0])
            d2[rows, start + rows] = np.inf
            knn[start : start + block.shape[0]] = _top_k_rows(-d2, knn.shape[1])
        src_parts.append(np.repeat(np.arange(n), knn.shape[1]))
        dst_parts.append(knn.reshape(-1))

        src = np.concatenate(src_parts)
        dst = np.concatenate(dst_parts)
        keep = src != dst
        src, dst = src[keep], dst[keep]
        pairs = np.unique(src * n + dst)
        src, dst = pairs // n, pairs % n
        dist = np.einsum("ed,ed->e", k[src] - k[dst], k[src] - k[dst])

        # 3. Candidate lists, nearest first, at most 2·degree per key.
        width = 2 * degree
        order = np.lexsort((dist, src))
        src, dst, dist = src[order], dst[order], dist[order]
        starts = np.searchsorted(src, np.arange(n))
        rank = np.arange(src.size) - starts[src]
        sel = rank < width
        cand = np.full((n, width), -1, dtype=np.int64)
        cand_d = np.full((n, width), np.inf, dtype=np.float32)
        cand[src[sel], rank[sel]] = dst[sel]
        cand_d[src[sel], rank[sel]] = dist[sel]

        # 4. Relative-neighbourhood pruning: drop c when a kept neighbour is closer to c than p is.
        # ``prune`` > 1 relaxes the rule (DiskANN's α): more long edges survive, which the
        # out-of-distribution queries need to cross between regions of key space.
        relax = prune * prune  # the distances compared are squared
        kept = np.zeros((n, width), dtype=bool)
        for start in range(0, n, _BLOCK):
            c = cand[start : start + _BLOCK]
            cd = cand_d[start : start + _BLOCK]
            vec = k[np.maximum(c, 0)]
            vsq = np.einsum("bcd,bcd->bc", vec, vec)
            pair = vsq[:, :, None] - 2.0 * np.einsum("bid,bjd->bij", vec, vec) + vsq[:, None, :]
            kb = np.zeros(c.shape, dtype=bool)
            count = np.zeros(c.shape[0], dtype=np.int64)
            for j in range(width):
                valid = (c[:, j] >= 0) & (count < degree)
                if j:
                    closer = relax * pair[:, :j, j] < cd[:, j : j + 1]
                    occluded = np.any(kb[:, :j] & closer, axis=1)
                    valid &= ~occluded
                kb[:, j] = valid
                count += valid
            kept[start : start + _BLOCK] = kb

        slots = degree + slack
        nbr = np.full((n, slots), -1, dtype=np.int64)
        ranks = np.cumsum(kept, axis=1) - 1
        rows, cols = np.nonzero(kept)
        nbr[rows, ranks[rows, cols]] = cand[rows, cols]
        fill = kept.sum(axis=1)

        # 5. Reverse edges where the target has a free slot (keeps the graph navigable both ways).
        rsrc, rdst = cand[rows, cols], rows
        order = np.argsort(rsrc, kind="stable")
        rsrc, rdst = rsrc[order], rdst[order]
        new = ~np.isin(rsrc * n + rdst, rows * n + cand[rows, cols])
        rstart = np.searchsorted(rsrc, np.arange(n))
        rrank = np.arange(rsrc.size) - rstart[rsrc]
        # Rank among the new edges only would be tighter; ranking among all is simpler and safe.
        has_room = fill[rsrc] + rrank < slots
        ok = has_room & new
        # Recompute slots for the edges actually added so there are no gaps.
        rsrc, rdst = rsrc[ok], rdst[ok]
        rstart = np.searchsorted(rsrc, np.arange(n))
        rrank = np.arange(rsrc.size) - rstart[rsrc]
        nbr[rsrc, fill[rsrc] + rrank] = rdst
        fill = fill + np.bincount(rsrc, minlength=n)

        # 6. Entry points: the keys queries most often like best (one per region of query space
        # the sample covers), then the most linked-to keys. Several entries cost a few scores and
        # keep a search from starting in a region of key space no edge leads out of.
        indeg = np.bincount(nbr[nbr >= 0], minlength=n)
        liked = np.flatnonzero(anchors)
        liked = liked[np.argsort(-anchors[liked], kind="stable")][:entry_count]
        hubs = np.argsort(-indeg, kind="stable")
        hubs = hubs[~np.isin(hubs, liked)][: max(4, entry_count - liked.size)]
        entries = np.concatenate([liked, hubs])[: max(entry_count, 4)]

        # 7. Connectivity: link every key a breadth-first search from the entries cannot reach.
        for _ in range(8):
            reached = _reachable(nbr, entries)
            missing = np.flatnonzero(~reached)
            if missing.size == 0:
                break
            reached_ids = np.flatnonzero(reached)
            for u in missing.tolist():
                near = [int(v) for v in knn[u] if reached[v]]
                r = near[0] if near else int(rng.choice(reached_ids))
                if fill[r] < slots:
                    nbr[r, fill[r]] = u
                    fill[r] += 1
                else:
                    nbr[r, slots - 1] = u
                reached[u] = True
        return cls(nbr.astype(np.int32), entries.astype(np.int32))

    def _upper(self, limit: int | None, capacity: int, expand: int) -> int:
        """Positions below this may be returned; checks the search parameters."""
        if capacity < 0:
            raise ConfigError(f"capacity must be >= 0, got {capacity}")
        if expand < 1:
            raise ConfigError(f"expand must be >= 1, got {expand}")
        n = self.size
        return n if limit is None else max(0, min(limit, n))

    def _start(self, upper: int) -> np.ndarray:
        """The starting candidates of a search returning positions below ``upper``."""
        start = self._starts.get(upper)
        if start is None:
            start = self._start_uncached(upper)
            if len(self._starts) >= 8:  # a session uses one or two limits; bound it anyway
                self._starts.clear()
            self._starts[upper] = start
        return start

    def _start_uncached(self, upper: int) -> np.ndarray:
        start = self.entries[self.entries < upper].astype(np.int64)
        if upper < self.size:
            # Under a filter the entries that survive may all sit in one region; positions spread
            # evenly over the prefix give the search a foothold everywhere it may go.
            spread = np.linspace(0, upper - 1, num=min(upper, self.entries.size)).astype(np.int64)
            start = np.unique(np.concatenate([start, spread]))
        return start

    def search(
        self,
        keys: np.ndarray,
        query: np.ndarray,
        beta: float,
        *,
        seed_score: float = -math.inf,
        capacity: int = 128,
        limit: int | None = None,
        expand: int = 2,
    ) -> GraphSearchResult:
        """DIPR over the graph: keys with ``q·k ≥ best − beta``, best counting ``seed_score``.

        Until ``capacity`` keys have been scored every neighbour joins the candidate list (free
        exploration); after that only neighbours within ``beta`` of the best so far do, and the
        search ends when the best unexpanded candidate falls out of range. ``limit`` restricts
        results to positions ``< limit``; neighbours beyond it are stepped over to their own
        neighbours (two hops), so the filtered graph stays connected.

        Compiled when numba is installed and ``keys`` are float32; ``search_numpy`` otherwise.
        """
        if not _compiled(keys):
            return self.search_numpy(
                keys,
                query,
                beta,
                seed_score=seed_score,
                capacity=capacity,
                limit=limit,
                expand=expand,
            )
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        return self.search_many(
            keys,
            q,
            beta,
            seed_scores=[seed_score],
            capacity=capacity,
            limit=limit,
            expand=expand,
        )[0]

    def search_many(
        self,
        keys: np.ndarray,
        queries: np.ndarray,
        beta: float,
        *,
        seed_scores: np.ndarray | list[float] | None = None,
        capacity: int = 128,
        limit: int | None = None,
        expand: int = 2,
    ) -> list[GraphSearchResult]:
        """``search`` for each of ``queries`` (g, d) (the query heads of this KV head), in one call.

        ``seed_scores`` (g,) seeds each query's best score (−∞ when omitted). The compiled search
        allocates its buffers once for all g queries; without numba this loops over
        ``search_numpy``.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.ndim != 2:
            raise ConfigError(f"queries must be a (g, d) array, got {q.shape}")
        g = q.shape[0]
        seeds = np.full(g, -math.inf) if seed_scores is None else np.asarray(seed_scores, float)
        if seeds.shape != (g,):
            raise ConfigError(f"seed_scores must have one score per query ({g}), got {seeds.shape}")
        if not _compiled(keys):
            return [
                self.search_numpy(
                    keys,
                    q[j],
                    beta,
                    seed_score=float(seeds[j]),
                    capacity=capacity,
                    limit=limit,
                    expand=expand,
                )
                for j in range(g)
            ]
        upper = self._upper(limit, capacity, expand)
        if upper == 0:
            return [
                GraphSearchResult(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), 0)
                for _ in range(g)
            ]
        k = np.ascontiguousarray(keys)
        if k.ndim != 2 or k.shape[0] < upper or k.shape[1] != q.shape[1]:
            raise ConfigError(
                f"keys {k.shape} must be (n, {q.shape[1]}) with n >= {upper} (the graph's prefix)"
            )
        ids, scores, offsets, touched = _graph_jit.search_many(
            k,
            self.neighbors,
            self._start(upper),
            q,
            np.ascontiguousarray(seeds, dtype=np.float64),
            beta,
            capacity,
            upper,
            expand,
            self._packed,
        )
        bounds = offsets.tolist()
        return [
            GraphSearchResult(
                ids[bounds[j] : bounds[j + 1]], scores[bounds[j] : bounds[j + 1]], int(touched[j])
            )
            for j in range(g)
        ]

    def search_numpy(
        self,
        keys: np.ndarray,
        query: np.ndarray,
        beta: float,
        *,
        seed_score: float = -math.inf,
        capacity: int = 128,
        limit: int | None = None,
        expand: int = 2,
    ) -> GraphSearchResult:
        """``search`` in numpy, one step of the beam at a time: the reference of the compiled one."""
        n = self.size
        upper = self._upper(limit, capacity, expand)
        if upper == 0:
            empty = np.empty(0, dtype=np.int64)
            return GraphSearchResult(empty, np.empty(0, dtype=np.float32), 0)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        visited = np.zeros(n, dtype=bool)
        start = self._start(upper)
        visited[start] = True
        beam_ids = start
        beam_scores = keys[start] @ q
        beam_open = np.ones(start.size, dtype=bool)
        touched = int(start.size)
        best = max(seed_score, float(beam_scores.max()))
        hits: list[np.ndarray] = [beam_ids[within(beam_scores, best, beta)]]
        nbr = self.neighbors
        while beam_open.any():
            # Expand the best few unexpanded candidates at once (the beam is sorted, best first):
            # fewer, larger numpy steps, for a few more keys scored.
            # When many candidates are open (a wide range), expand a quarter of them per step.
            open_pos = np.flatnonzero(beam_open)
            pos = open_pos[: max(expand, open_pos.size // 4)]
            beam_open[pos] = False
            hop = nbr[beam_ids[pos]].reshape(-1)
            hop = hop[hop >= 0]
            if upper < n:
                far = hop[hop >= upper]
                hop = hop[hop < upper]
                if far.size:
                    two = nbr[far].reshape(-1)
                    hop = np.concatenate([hop, two[(two >= 0) & (two < upper)]])
            hop = np.unique(hop[~visited[hop]]).astype(np.int64)
            if hop.size == 0:
                continue
            visited[hop] = True
            sc = keys[hop] @ q
            touched += int(hop.size)
            best = max(best, float(sc.max()))
            hits.append(hop[within(sc, best, beta)])
            ids = np.concatenate([beam_ids, hop])
            scs = np.concatenate([beam_scores, sc])
            opn = np.concatenate([beam_open, np.ones(hop.size, dtype=bool)])
            order = np.argsort(-scs, kind="stable")
            # The beam holds the best `capacity` candidates, or every candidate within beta of the
            # best when there are more: the range, not a fixed k, decides how far the search goes.
            keep = max(capacity, int(np.count_nonzero(within(scs, best, beta))))
            order = order[:keep]
            beam_ids, beam_scores, beam_open = ids[order], scs[order], opn[order]
        found = np.unique(np.concatenate(hits))
        found_scores = keys[found] @ q
        ok = within(found_scores, best, beta)
        return GraphSearchResult(found[ok], found_scores[ok], touched)


def _compiled(keys: np.ndarray) -> bool:
    """Whether the compiled search serves these keys (numba there, keys float32 as it is built for)."""
    return _graph_jit.AVAILABLE and getattr(keys, "dtype", None) == np.float32


def _reachable(nbr: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Which nodes a breadth-first search from ``entries`` reaches (vectorised by frontier)."""
    n = nbr.shape[0]
    seen = np.zeros(n, dtype=bool)
    frontier = np.unique(entries)
    seen[frontier] = True
    while frontier.size:
        nxt = nbr[frontier].reshape(-1)
        nxt = nxt[nxt >= 0]
        nxt = np.unique(nxt[~seen[nxt]])
        seen[nxt] = True
        frontier = nxt
    return seen
