"""``Session``: a transformers ``DynamicCache`` whose decode steps attend sparsely.

The cache keeps every key and value exactly (in buffers that grow by doubling, so a decode step does
not copy the whole cache). A prefill — any forward pass with more than one new token — is exact
attention. A single-token decode step attends the window (first ``n_init`` and last ``n_last``
tokens) exactly and, from the keys between, only those DIPR selects: by a flat scan, or by the
per-KV-head graph index built when the context was stored. The two parts are merged with
log-sum-exp, so with β = ∞ the result is full attention.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicCache

from .._dipr import threshold as dipr_threshold
from .._dipr import within
from ..errors import ConfigError
from ._config import LayerStats, Mode, SparseConfig, StepStats, choose_mode
from ._graph import KeyGraph
from ._layers import BufferedLayer, KVRows, Sketch, StoredLayer
from ._merge import attend_logits, merge_partials
from ._scan import scan_step, window_scores
from ._stream_scan import stream_scan

__all__ = ["Session"]

log = logging.getLogger("vectorstream.attention.session")

# The attention function receives the cache's keys but not the cache; the session that just
# returned those keys says so here (checked by identity, so a stale entry is never used).
_ACTIVE: ContextVar[weakref.ref[Session] | None] = ContextVar("vectorstream_session", default=None)


def active_session(layer_idx: int | None, keys: torch.Tensor) -> Session | None:
    """The session whose ``update`` for ``layer_idx`` returned exactly ``keys``, if any."""
    ref = _ACTIVE.get()
    session = ref() if ref is not None else None
    if session is None or session._last is None:
        return None
    last_layer, last_keys = session._last
    if last_layer != layer_idx or last_keys is not keys:
        return None
    return session


def _layer_kv(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, H_kv, n, d) keys and values of an attention cache layer (base and suffix joined)."""
    if isinstance(layer, BufferedLayer) and layer.base_keys is not None:
        return layer.full()
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ConfigError(f"cache layer {type(layer).__name__} holds no keys and values")
    return keys, values


class Session(DynamicCache):
    """A KV cache for one sequence (batch 1) that answers decode attention with DIPR.

    Pass it as the cache (``cache`` in newer transformers, ``past_key_values`` in older ones) to a
    model whose attention implementation is ``"vectorstream"`` (see ``register``). ``token_ids`` lists the tokens the cache holds when they came through
    ``generate`` or a ``ContextDB``; ``stats`` holds the statistics of each decode step.
    """

    def __init__(self, config: SparseConfig | None = None, *, seed: int = 0) -> None:
        Cache.__init__(self, layer_class_to_replicate=BufferedLayer)
        self.sparse = config or SparseConfig()
        self.token_ids: list[int] = []
        self.context_id: str | None = None
        self.reused_tokens = 0
        self._graphs: dict[int, list[KeyGraph]] = {}
        self._graph_limit = 0
        self._queries: dict[int, list[np.ndarray]] = {}
        self._query_rows: dict[int, int] = {}
        self._rng = np.random.default_rng(seed)
        self._steps: list[StepStats] = []
        self._current: list[LayerStats] = []
        self._last: tuple[int, torch.Tensor] | None = None
        self._proxy = False

    # -- cache ----------------------------------------------------------------------------------
    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        proxy = False
        if isinstance(layer, BufferedLayer) and layer.base_keys is not None:
            # A sparse step reads the stored part itself: hand out only the suffix, not a copy
            # of the whole cache (``attend`` knows; ``_observe`` refuses any other use).
            n = layer.get_seq_length() + key_states.shape[-2]
            proxy = (
                key_states.shape[0] == 1
                and key_states.shape[-2] == 1
                and self._mode(layer_idx, n) != "full"
            )
            layer.sparse_next = proxy
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        self._last = (layer_idx, keys)
        self._proxy = proxy
        _ACTIVE.set(weakref.ref(self))
        return keys, values

    @classmethod
    def from_kv(
        cls,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        config: SparseConfig | None = None,
        token_ids: list[int] | None = None,
        *,
        copy: bool = True,
        release: Callable[[], None] | None = None,
        stored: Sequence[StoredLayer] | None = None,
    ) -> Session:
        """A session holding the given per-layer keys and values, (1, H_kv, n, d) or (H_kv, n, d).

        With ``copy=False`` the tensors are used in place as each layer's stored part (a
        ``ContextDB`` passes memory-mapped ones, so only the pages decoding reads become resident);
        new tokens go to buffers beside them. ``release`` then drops the resident pages of the
        stored tensors (called once a layer's keys have been read whole to build its sketch).
        ``stored`` (a ``ContextDB`` passes it for float32 contexts) lets decode steps over long
        contexts run the compiled scan (``_stream_scan``) over each layer's int8 sketch.
        """
        session = cls(config)
        for layer_idx, (k, v) in enumerate(kv):
            k4 = k if k.dim() == 4 else k.unsqueeze(0)
            v4 = v if v.dim() == 4 else v.unsqueeze(0)
            if copy:
                DynamicCache.update(session, k4, v4, layer_idx)
            else:
                layer = BufferedLayer()
                layer.set_base(k4, v4, release)
                if stored is not None:
                    layer.stored = stored[layer_idx]
                session.layers.append(layer)
        session.token_ids = list(token_ids or [])
        return session

    def kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (keys, values) of the first sequence, each (H_kv, n, d)."""
        return [(k[0], v[0]) for k, v in map(_layer_kv, self.layers)]

    # -- indexes --------------------------------------------------------------------------------
    @property
    def graphs(self) -> dict[int, list[KeyGraph]]:
        """Graph index per layer, one per KV head (empty until built or loaded)."""
        return dict(self._graphs)

    @property
    def graph_limit(self) -> int:
        """Graph search only returns positions below this (the reused prefix of a stored context)."""
        return self._graph_limit

    def install_graphs(self, graphs: dict[int, list[KeyGraph]], limit: int) -> None:
        """Use ``graphs`` for decode steps; positions ``>= limit`` in them are filtered out."""
        self._graphs = dict(graphs)
        self._graph_limit = limit if graphs else 0

    def sampled_queries(self, layer_idx: int) -> np.ndarray | None:
        """Queries seen at ``layer_idx`` (H_q, m, d), a random sample of at most ``max_queries``."""
        parts = self._queries.get(layer_idx)
        if not parts:
            return None
        q = np.concatenate(parts, axis=1)
        if q.shape[1] > self.sparse.max_queries:
            pick = np.sort(self._rng.choice(q.shape[1], self.sparse.max_queries, replace=False))
            q = q[:, pick]
        return q

    def build_graphs(self, layers: list[int] | None = None) -> dict[int, list[KeyGraph]]:
        """Build the graph index of every layer (flat layers excepted) from keys and queries."""
        graphs: dict[int, list[KeyGraph]] = {}
        wanted = range(len(self.layers)) if layers is None else layers
        for layer_idx in wanted:
            if layer_idx in self.sparse.flat_layers and self.sparse.mode == "auto":
                continue
            keys = _layer_kv(self.layers[layer_idx])[0][0].detach().float().cpu().numpy()
            h_kv = keys.shape[0]
            queries = self.sampled_queries(layer_idx)
            group = None if queries is None else queries.shape[0] // h_kv
            per_head = []
            for h in range(h_kv):
                # GQA: one graph per KV head, learned from every query head that reads it.
                q = None
                if queries is not None and group:
                    q = queries[h * group : (h + 1) * group].reshape(-1, keys.shape[-1])
                per_head.append(KeyGraph.build(keys[h], q))
            graphs[layer_idx] = per_head
        log.debug("built graphs for %d layers over %d keys", len(graphs), self.get_seq_length())
        return graphs

    # -- statistics -----------------------------------------------------------------------------
    @property
    def stats(self) -> tuple[StepStats, ...]:
        """Statistics of each decode step so far (the step in progress included)."""
        done = tuple(self._steps)
        if self._current:
            done += (StepStats(len(self._steps), tuple(self._current)),)
        return done

    def _record(self, stats: LayerStats) -> None:
        if self._current and stats.layer <= self._current[-1].layer:
            self._steps.append(StepStats(len(self._steps), tuple(self._current)))
            self._current = []
        self._current.append(stats)

    def _observe(self, layer_idx: int, query: torch.Tensor) -> None:
        """Keep a random sample of this layer's queries (the attention function's exact path)."""
        if self._proxy and self._last is not None and self._last[0] == layer_idx:
            # update() handed out only the new tokens, expecting a sparse step; exact attention
            # over them would silently miss the stored part.
            raise ConfigError(
                "a memory-mapped session needs batch-1 single-token decode steps without a "
                "padding mask; load the context with mmap=False for other uses"
            )
        self._sample(layer_idx, query)

    def _sample(self, layer_idx: int, query: torch.Tensor) -> None:
        """Keep a random sample of this layer's queries for building its graph later."""
        cap = self.sparse.max_queries
        if cap == 0:
            return
        q = query[0].detach().float().cpu().numpy()  # (H_q, t, d)
        t = q.shape[1]
        if t > cap:
            q = q[:, np.sort(self._rng.choice(t, cap, replace=False))]
        self._queries.setdefault(layer_idx, []).append(np.ascontiguousarray(q))
        rows = self._query_rows.get(layer_idx, 0) + q.shape[1]
        if rows > 2 * cap:
            # Compact so a long decode does not grow memory without bound.
            kept = self.sampled_queries(layer_idx)
            assert kept is not None
            self._queries[layer_idx] = [kept]
            rows = kept.shape[1]
        self._query_rows[layer_idx] = rows

    # -- attention ------------------------------------------------------------------------------
    def attend(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float,
    ) -> tuple[torch.Tensor, Mode]:
        """One decode step of one layer: ``(output (1, 1, H_q, d_v), mode)``.

        Called by the registered attention function for single-token, batch-1 steps. In full mode
        the output is empty and the caller runs exact SDPA; the step is still counted in ``stats``.
        """
        found = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        layer = found if isinstance(found, BufferedLayer) else None
        mapped = layer is not None and layer.base_keys is not None
        n = layer.get_seq_length() if layer is not None and mapped else key.shape[2]
        self._sample(layer_idx, query)
        mode = self._mode(layer_idx, n)
        graphs = self._graphs.get(layer_idx)
        h_q, h_kv, d = query.shape[1], key.shape[1], query.shape[-1]
        if h_q % h_kv:
            raise ConfigError(f"{h_q} query heads do not divide into {h_kv} KV heads")
        if mode == "full":
            self._record(LayerStats(layer_idx, "full", n, n, (0,) * h_q, (0,) * h_q))
            return torch.empty(0), "full"
        g = h_q // h_kv
        beta = self.sparse.beta(d, scaling, layer_idx)
        q = query[0, :, 0, :].float().reshape(h_kv, g, d)
        head = min(self.sparse.n_init, n)
        tail = max(head, n - self.sparse.n_last)
        rows = (
            layer.rows() if mapped and isinstance(layer, BufferedLayer) else KVRows.of(key, value)
        )
        if mode == "flat":
            sketchy = tail - head >= self.sparse.sketch_min
            if not mapped and not sketchy:
                k_all, v_all = key[0].float(), value[0].float()
                return self._attend_flat(
                    layer_idx, q, k_all, v_all, head, tail, beta, scaling, query
                )
            if sketchy and layer is not None and layer.stored and tail <= layer.base_len:
                return self._attend_stored(
                    layer_idx, layer.stored, q, rows, head, tail, beta, scaling, query
                )
            sketch = None
            if sketchy and layer is not None:
                if layer.sketch is None:
                    layer.sketch = Sketch(layer)
                sketch = layer.sketch
            res = scan_step(rows, q, head, tail, beta, scaling, sketch)
            w = n - (tail - head)
            touched = (tail - head,) * h_q
            self._record(LayerStats(layer_idx, "flat", n, w, res.selected, touched))
            return res.out.reshape(1, 1, h_q, -1).to(query.dtype), "flat"
        assert graphs is not None
        return self._attend_graph(layer_idx, q, rows, graphs, head, tail, beta, scaling, query)

    def _attend_stored(
        self,
        layer_idx: int,
        stored: StoredLayer,
        q: torch.Tensor,
        rows: KVRows,
        head: int,
        tail: int,
        beta: float,
        scaling: float,
        query: torch.Tensor,
    ) -> tuple[torch.Tensor, Mode]:
        """Flat DIPR with the middle [head, tail) in the stored part: the window exactly, the
        middle by the compiled scan over the int8 sketch; then the layer's pages go back."""
        h_kv, g, _ = q.shape
        n = rows.n
        # With pages given back, the sketch is read into a buffer rather than mapped again,
        # unless it is among those the resident budget keeps mapped.
        resident = not self.sparse.release_pages or stored.resident
        sketch = stored.sketch if resident else stored.read_sketch()
        k_head, v_head = rows.span(0, head)
        k_tail, v_tail = rows.span(tail, n)
        res = stream_scan(
            q,
            sketch,
            stored.keys,
            stored.values,
            head,
            tail,
            torch.cat([k_head, k_tail], dim=1),
            torch.cat([v_head, v_tail], dim=1),
            beta,
            scaling,
        )
        out = res.out
        if self.sparse.release_pages:
            stored.release()
        w = n - (tail - head)
        self._record(LayerStats(layer_idx, "flat", n, w, res.selected, res.exact))
        return out.reshape(1, 1, h_kv * g, -1).to(query.dtype), "flat"

    def _mode(self, layer_idx: int, n: int) -> Mode:
        """``choose_mode`` for this session's index (a graph filtered to under half is not used)."""
        graphs = self._graphs.get(layer_idx)
        indexed = self._graph_limit if graphs else 0
        if graphs and 2 * self._graph_limit < graphs[0].size:
            # A filter that keeps under half the graph leaves it poorly connected (recall drops),
            # while the flat scan of so short a prefix is cheap: scan instead.
            indexed = 0
        mode = choose_mode(layer_idx, n, indexed, self.sparse)
        return "flat" if mode == "graph" and not graphs else mode

    def _attend_graph(
        self,
        layer_idx: int,
        q: torch.Tensor,
        rows: KVRows,
        graphs: list[KeyGraph],
        head: int,
        tail: int,
        beta: float,
        scaling: float,
        query: torch.Tensor,
    ) -> tuple[torch.Tensor, Mode]:
        """Graph mode: the window and the unindexed rest scanned, the indexed prefix searched."""
        h_kv, g, _ = q.shape
        h_q, n = h_kv * g, rows.n
        mode: Mode = "graph"
        raw_win, v_win = window_scores(rows, q, head, tail)  # one product per KV head
        w = raw_win.shape[-1]
        best = raw_win.amax(-1)  # the window's maximum seeds the DIPR threshold

        # The middle [head, tail) splits into a graph-searched prefix and a flat-scanned rest.
        graph_hi = max(head, min(self._graph_limit, tail))
        k_flat, v_flat = rows.span(graph_hi, tail)
        raw_flat = q @ k_flat.float().transpose(1, 2)  # (H_kv, g, m)
        if raw_flat.shape[-1]:
            best = torch.maximum(best, raw_flat.amax(-1))

        graph_touched = np.zeros(h_q, dtype=np.int64)
        graph_idx: torch.Tensor | None = None
        graph_mask: torch.Tensor | None = None
        if graph_hi > head:
            # The indexed prefix is read in place (a memory map for a stored context).
            keys_np = rows.span(0, graph_hi)[0].detach().float().cpu().numpy()
            q_np = q.detach().cpu().numpy()
            best_np = best.detach().cpu().numpy().copy()
            hits: list[np.ndarray] = []
            for h in range(h_kv):
                # One call per KV head searches the g query heads that read it.
                found = graphs[h].search_many(
                    keys_np[h],
                    q_np[h],
                    beta,
                    seed_scores=best_np[h],
                    capacity=self.sparse.capacity,
                    limit=graph_hi,
                )
                for j, res in enumerate(found):
                    graph_touched[h * g + j] = res.touched
                    # Keys of the first n_init positions are in the window already.
                    hits.append(res.indices[res.indices >= head])
                    if res.scores.size:
                        best_np[h, j] = max(best_np[h, j], float(res.scores.max()))
            best = torch.from_numpy(best_np)
            width = max(1, max(hit.size for hit in hits))
            idx = np.zeros((h_q, width), dtype=np.int64)
            valid = np.zeros((h_q, width), dtype=bool)
            for i, hit in enumerate(hits):
                idx[i, : hit.size] = hit
                valid[i, : hit.size] = True
            graph_idx = torch.from_numpy(idx).reshape(h_kv, g, width)
            graph_mask = torch.from_numpy(valid).reshape(h_kv, g, width)

        floor = dipr_threshold(best, beta).unsqueeze(-1)  # −inf when beta is inf
        parts = [attend_logits(raw_win * scaling, v_win)]
        flat_sel = raw_flat >= floor
        selected = flat_sel.sum(-1).reshape(-1)
        if raw_flat.shape[-1]:
            parts.append(self._attend_selected(raw_flat, flat_sel, v_flat.float(), scaling))
        if graph_idx is not None and graph_mask is not None:
            picked = [rows.take(h, graph_idx[h].reshape(-1)) for h in range(h_kv)]
            k_sel = torch.stack([k for k, _ in picked]).float().reshape(h_kv, g, width, -1)
            v_sel = torch.stack([v for _, v in picked]).float().reshape(h_kv, g, width, -1)
            raw_sel = (q.unsqueeze(-2) @ k_sel.transpose(-1, -2)).squeeze(-2)
            in_range = graph_mask & (raw_sel >= floor)
            parts.append(attend_logits(raw_sel * scaling, v_sel, in_range))
            selected = selected + in_range.sum(-1).reshape(-1)
        out = merge_partials(parts)  # (H_kv, g, d_v)

        flat_count = tail - graph_hi
        touched = tuple(int(flat_count + t) for t in graph_touched)
        self._record(LayerStats(layer_idx, mode, n, w, tuple(selected.tolist()), touched))
        return out.reshape(1, 1, h_q, -1).to(query.dtype), mode

    def _attend_flat(
        self,
        layer_idx: int,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        head: int,
        tail: int,
        beta: float,
        scaling: float,
        query: torch.Tensor,
    ) -> tuple[torch.Tensor, Mode]:
        """The flat scan in one pass: all scores in one product per KV head, one masked softmax.

        Window and DIPR set live in the same place here, so one softmax over their union replaces
        the two parts and their merge (the same result, in a few operations instead of dozens).
        """
        h_kv, g, _ = q.shape
        n = keys.shape[1]
        raw = q @ keys.transpose(1, 2)  # (H_kv, g, n)
        window = torch.ones(n, dtype=torch.bool)
        window[head:tail] = False
        keep = within(raw, raw.amax(-1, keepdim=True), beta) | window
        out, _ = attend_logits(raw * scaling, values, keep)
        selected = (keep[..., head:tail]).sum(-1).reshape(-1).tolist()
        w = n - (tail - head)
        self._record(
            LayerStats(layer_idx, "flat", n, w, tuple(selected), (tail - head,) * (h_kv * g))
        )
        return out.reshape(1, 1, h_kv * g, -1).to(query.dtype), "flat"

    @staticmethod
    def _attend_selected(
        raw: torch.Tensor, sel: torch.Tensor, values: torch.Tensor, scaling: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention over the scanned keys DIPR kept: dense when many are kept, gathered if few."""
        h_kv, _, m = raw.shape
        width = int(sel.sum(-1).max())
        if 4 * width >= m:
            return attend_logits(raw * scaling, values, sel)
        # Few keys: gather just those values (selected first, in a stable order).
        width = max(width, 1)
        order = torch.sort(sel.to(torch.int8), dim=-1, descending=True, stable=True).indices
        idx = order[..., :width]
        keep = torch.gather(sel, -1, idx)
        logits = torch.gather(raw, -1, idx) * scaling
        rows = torch.arange(h_kv).reshape(h_kv, 1, 1)
        return attend_logits(logits, values[rows, idx], keep)
