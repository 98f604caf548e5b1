"""``ContextDB``: contexts (token ids, per-layer keys and values, graph indexes) kept on disk.

Layout, one folder per context under the database folder::

    <id>/meta.json        sizes and which layers are indexed
    <id>/tokens.npy       token ids (int64)
    <id>/kv.safetensors   keys.<layer>, values.<layer>: (H_kv, n, d) in the model's dtype, or
                          float16 for a float32 model when the database is opened with
                          ``kv_dtype="float16"``
    <id>/graphs.npz       l<layer>h<head>n (adjacency) and l<layer>h<head>e (entry points)

A context's id is a hash of its tokens, so storing the same context twice replaces it. Contexts are
written to a temporary folder and renamed into place, so a reader never sees half a context.

float16 storage halves the file and the pages a sparse decode step reads; the stored keys and
values then differ from the model's by float16 rounding, so a reused context is no longer bit for
bit the recomputed one. A cache whose values do not fit float16 is stored in float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ConfigError, StoreError
from ._config import SparseConfig
from ._graph import KeyGraph
from ._layers import StoredLayer
from ._mapped import MappedFile, SketchReader, load_sketches, write_sketch
from ._session import Session
from ._stream_scan import AVAILABLE as STREAM_SCAN
from ._stream_scan import KeySketch

__all__ = ["ContextDB", "ContextInfo"]

log = logging.getLogger("vectorstream.attention.contextdb")

KV_DTYPES = (None, "float16")
_HALF_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class ContextInfo:
    """What a stored context holds."""

    id: str
    n_tokens: int
    n_layers: int
    n_kv_heads: int
    head_dim: int
    indexed_layers: tuple[int, ...]


def _as_ids(input_ids: Any) -> list[int]:
    """Token ids from a list, a 1-D array/tensor, a (1, n) batch or a tokenizer's encoding."""
    if isinstance(input_ids, Mapping):
        if "input_ids" not in input_ids:
            raise ConfigError("a mapping of inputs needs an 'input_ids' entry")
        input_ids = input_ids["input_ids"]
    if isinstance(input_ids, torch.Tensor):
        arr = input_ids.detach().cpu().numpy()
    else:
        arr = np.asarray(input_ids)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ConfigError(f"input_ids must be one sequence, got shape {arr.shape}")
    return [int(t) for t in arr.tolist()]


def _context_id(ids: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:24]


def _kv_pairs(kv: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) as (H_kv, n, d) from a cache or a sequence of pairs."""
    if isinstance(kv, Session):
        pairs = kv.kv()  # joins a memory-mapped stored part with the new tokens
    elif hasattr(kv, "layers"):
        pairs = [(layer.keys, layer.values) for layer in kv.layers]
    else:
        pairs = [(k, v) for k, v in kv]
    out = []
    for k, v in pairs:
        k3 = k[0] if k.dim() == 4 else k
        v3 = v[0] if v.dim() == 4 else v
        if k3.dim() != 3 or k3.shape[:2] != v3.shape[:2]:
            raise ConfigError(
                f"keys/values must be (H_kv, n, d), got {tuple(k.shape)}, {tuple(v.shape)}"
            )
        out.append((k3, v3))
    if not out:
        raise ConfigError("the KV cache has no layers")
    return out


class ContextDB:
    """Stored contexts and the sessions that reuse them.

    ``create_session(ids)`` reuses the stored context sharing the longest prefix with ``ids``;
    ``store(session)`` builds the session's graph indexes and writes everything to disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: SparseConfig | None = None,
        *,
        kv_dtype: str | None = None,
    ) -> None:
        if kv_dtype not in KV_DTYPES:
            raise ConfigError(f"kv_dtype must be one of {KV_DTYPES}, not {kv_dtype!r}")
        self.path = Path(path)
        self.config = config or SparseConfig()
        self.kv_dtype = kv_dtype
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the context database at {self.path}: {exc}") from exc

    # -- reading --------------------------------------------------------------------------------
    def contexts(self) -> list[ContextInfo]:
        """Every stored context, in id order."""
        infos = []
        for meta in sorted(self.path.glob("*/meta.json")):
            infos.append(self._info(meta.parent.name))
        return infos

    def _info(self, context_id: str) -> ContextInfo:
        try:
            meta = json.loads((self.path / context_id / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"context {context_id} is unreadable: {exc}") from exc
        return ContextInfo(
            id=context_id,
            n_tokens=int(meta["n_tokens"]),
            n_layers=int(meta["n_layers"]),
            n_kv_heads=int(meta["n_kv_heads"]),
            head_dim=int(meta["head_dim"]),
            indexed_layers=tuple(int(x) for x in meta["indexed_layers"]),
        )

    def tokens(self, context_id: str) -> np.ndarray:
        try:
            return np.load(self.path / context_id / "tokens.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StoreError(f"context {context_id} has no readable tokens: {exc}") from exc

    def longest_prefix(self, input_ids: Any) -> tuple[str | None, int]:
        """The stored context sharing the longest prefix with ``input_ids``, and its length."""
        ids = np.asarray(_as_ids(input_ids), dtype=np.int64)
        best: tuple[str | None, int] = (None, 0)
        for info in self.contexts():
            stored = self.tokens(info.id)
            m = min(len(stored), len(ids))
            differ = np.flatnonzero(stored[:m] != ids[:m])
            common = int(differ[0]) if differ.size else m
            if common > best[1]:
                best = (info.id, common)
        return best

    def load_kv(
        self, context_id: str, length: int | None = None, *, mmap: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The stored keys and values of the first ``length`` tokens, per layer (H_kv, n, d).

        With ``mmap=True`` the tensors view the file through a memory map instead of being read
        into memory: only the pages that are touched become resident.
        """
        return self._load_kv(context_id, length, mmap)[0]

    def _load_kv(
        self, context_id: str, length: int | None, mapped: bool
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], MappedFile | None]:
        """Per-layer keys and values, and the memory map they view (``None`` when read)."""
        info = self._info(context_id)
        n = info.n_tokens if length is None else min(length, info.n_tokens)
        file = self.path / context_id / "kv.safetensors"
        if mapped:
            try:
                kv = MappedFile(file)
                pairs = [
                    (kv.tensor(f"keys.{i}", n), kv.tensor(f"values.{i}", n))
                    for i in range(info.n_layers)
                ]
            except (OSError, KeyError, ValueError) as exc:
                raise StoreError(f"context {context_id} has unreadable keys/values: {exc}") from exc
            return pairs, kv
        kv_pairs = []
        try:
            with safe_open(str(file), framework="pt") as f:
                for layer in range(info.n_layers):
                    k = f.get_slice(f"keys.{layer}")[:, :n, :]
                    v = f.get_slice(f"values.{layer}")[:, :n, :]
                    kv_pairs.append((k, v))
        except (OSError, KeyError) as exc:
            raise StoreError(f"context {context_id} has unreadable keys/values: {exc}") from exc
        return kv_pairs, None

    def _stored_layers(
        self, context_id: str, kv: MappedFile, resident_bytes: int = 0
    ) -> list[StoredLayer] | None:
        """Per layer: the int8 key sketch and a release of that layer's pages (float32 contexts,
        with numba); ``None`` where the compiled scan cannot run, so the session scans in torch."""
        info = self._info(context_id)
        if not STREAM_SCAN or kv.header["keys.0"]["dtype"] not in ("F32", "F16"):
            return None
        try:
            sk_file, sketches = load_sketches(self.path / context_id, kv, info.n_layers)
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"context {context_id} has an unreadable key sketch: {exc}") from exc
        reader = SketchReader(sk_file)
        layers = []
        used = 0
        for i, sketch in enumerate(sketches):
            # The first layers whose sketches fit in the budget keep them mapped between steps.
            used += sketch.codes.nbytes + sketch.scales.nbytes
            resident = used <= resident_bytes
            # The kernel maps pages around each one read (fault-around), some of them in other
            # layers' ranges: the last layer of a step gives back the whole map.
            kv_names: tuple[str, ...] = (
                () if i == info.n_layers - 1 else (f"keys.{i}", f"values.{i}")
            )

            def release(kv_names: tuple[str, ...] = kv_names) -> None:
                kv.release(kv_names)

            def read_sketch(layer: int = i) -> KeySketch:
                return reader.read(layer)

            keys = kv.array(f"keys.{i}")
            values = kv.array(f"values.{i}")
            layers.append(StoredLayer(sketch, keys, values, release, read_sketch, resident))
        return layers

    def load_graphs(self, context_id: str) -> dict[int, list[KeyGraph]]:
        info = self._info(context_id)
        file = self.path / context_id / "graphs.npz"
        if not info.indexed_layers or not file.exists():
            return {}
        graphs: dict[int, list[KeyGraph]] = {}
        try:
            with np.load(file) as data:
                for layer in info.indexed_layers:
                    graphs[layer] = [
                        KeyGraph(data[f"l{layer}h{h}n"], data[f"l{layer}h{h}e"])
                        for h in range(info.n_kv_heads)
                    ]
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"context {context_id} has an unreadable index: {exc}") from exc
        return graphs

    def create_session(
        self, input_ids: Any, config: SparseConfig | None = None, *, mmap: bool = True
    ) -> tuple[Session, list[int]]:
        """A session holding the longest stored prefix of ``input_ids``, and the ids still to run.

        At least one id is always left to run, so the caller's next forward pass yields logits.
        Under partial reuse the stored graph index is searched with the filter position < L.
        The stored keys and values are memory-mapped (``mmap=False`` reads them into memory):
        decode steps read the window and the keys DIPR selects, so a long context's resident
        memory stays a fraction of its size; an exact step (a prefill chunk, full attention)
        joins the stored part and the new tokens per layer for that step.
        """
        ids = _as_ids(input_ids)
        cfg = config or self.config
        context_id, common = self.longest_prefix(ids)
        reuse = min(common, len(ids) - 1)
        if context_id is None or reuse <= 0:
            return Session(cfg), ids
        kv, mapped = self._load_kv(context_id, reuse, mmap)
        release = mapped.releaser() if mapped is not None else None
        stored = (
            self._stored_layers(context_id, mapped, cfg.sketch_resident_bytes)
            if mapped is not None
            else None
        )
        session = Session.from_kv(
            kv, cfg, ids[:reuse], copy=not mmap, release=release, stored=stored
        )
        session.context_id = context_id
        session.reused_tokens = reuse
        session.install_graphs(self.load_graphs(context_id), reuse)
        log.debug("reusing %d tokens of context %s", reuse, context_id)
        return session, ids[reuse:]

    # -- writing --------------------------------------------------------------------------------
    def store(self, session: Session, token_ids: Any = None, *, build_index: bool = True) -> str:
        """Build the session's graph indexes and write its context; returns the context id.

        ``token_ids`` defaults to the ids the session recorded (``generate`` and ``ContextDB``
        record them); their number must equal the cache's length.
        """
        ids = session.token_ids if token_ids is None else _as_ids(token_ids)
        n = session.get_seq_length()
        if len(ids) != n:
            raise ConfigError(f"{len(ids)} token ids for a cache of {n} tokens; pass token_ids")
        graphs: dict[int, list[KeyGraph]] = {}
        if build_index:
            # Graphs already covering the whole session (stored before, or built by the caller)
            # are reused; otherwise they are built now from its keys and sampled queries.
            current = session.graphs
            covered = (
                current
                and session.graph_limit == n
                and all(g[0].size == n for g in current.values())
            )
            graphs = current if covered else session.build_graphs()
        context_id = self._write(ids, _kv_pairs(session), graphs)
        session.install_graphs(graphs, n)
        session.context_id = context_id
        session.token_ids = list(ids)
        return context_id

    def import_context(self, input_ids: Any, kv: Any, *, build_index: bool = True) -> str:
        """Store a context computed elsewhere (a ``DynamicCache`` or per-layer (K, V) pairs).

        Without recorded queries its graphs are built from the keys alone.
        """
        ids = _as_ids(input_ids)
        pairs = _kv_pairs(kv)
        if pairs[0][0].shape[1] != len(ids):
            raise ConfigError(f"{len(ids)} token ids for {pairs[0][0].shape[1]} cached tokens")
        graphs: dict[int, list[KeyGraph]] = {}
        if build_index:
            session = Session.from_kv(pairs, self.config, ids)
            graphs = session.build_graphs()
        return self._write(ids, pairs, graphs)

    def delete(self, context_id: str) -> bool:
        folder = self.path / context_id
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True

    def _storage_pairs(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``pairs`` in the stored dtype: float16 when asked for and every value fits."""
        if self.kv_dtype != "float16" or pairs[0][0].dtype != torch.float32:
            return pairs
        for k, v in pairs:
            for t in (k, v):
                if not bool(torch.isfinite(t).all()) or float(t.abs().max()) > _HALF_MAX:
                    log.warning("a key or value does not fit float16: the context stays float32")
                    return pairs
        return [(k.to(torch.float16), v.to(torch.float16)) for k, v in pairs]

    def _write(
        self,
        ids: Sequence[int],
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        graphs: dict[int, list[KeyGraph]],
    ) -> str:
        context_id = _context_id(ids)
        final = self.path / context_id
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.path))
            np.save(tmp / "tokens.npy", np.asarray(ids, dtype=np.int64))
            pairs = self._storage_pairs(pairs)
            tensors: dict[str, torch.Tensor] = {}
            for layer, (k, v) in enumerate(pairs):
                tensors[f"keys.{layer}"] = k.detach().cpu().contiguous()
                tensors[f"values.{layer}"] = v.detach().cpu().contiguous()
            save_file(tensors, str(tmp / "kv.safetensors"))
            if pairs[0][0].dtype in (torch.float32, torch.float16):
                # From the stored keys: the scan's bounds hold for what it reads back.
                write_sketch(tmp, [k for k, _ in pairs])
            arrays: dict[str, np.ndarray] = {}
            for layer, per_head in graphs.items():
                for h, graph in enumerate(per_head):
                    arrays[f"l{layer}h{h}n"] = graph.neighbors
                    arrays[f"l{layer}h{h}e"] = graph.entries
            if arrays:
                np.savez(tmp / "graphs.npz", **arrays)  # type: ignore[arg-type]
            meta = {
                "n_tokens": len(ids),
                "n_layers": len(pairs),
                "n_kv_heads": int(pairs[0][0].shape[0]),
                "head_dim": int(pairs[0][0].shape[-1]),
                "dtype": str(pairs[0][0].dtype).removeprefix("torch."),
                "indexed_layers": sorted(graphs),
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except OSError as exc:
            raise StoreError(f"cannot write context {context_id} to {self.path}: {exc}") from exc
        log.debug(
            "stored context %s (%d tokens, %d indexed layers)", context_id, len(ids), len(graphs)
        )
        return context_id
