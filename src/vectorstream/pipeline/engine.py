"""``Pipeline``: one embedder, one store, the four stages, and an executor that drives them.

    plan (manifest: skip, replace, prune) → process (parse + chunk) → embed → commit
                                                          (write, delete stale, manifest row)

The stages (``pipeline.stages``) know nothing about threads, processes or clusters; an executor
(``pipeline.executors``) runs them. The local executor is the default; ``engine="ray"`` runs them
on a Ray cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..stores._distributed import RemoteWrites
from ..stores.base import VectorStore, require_kind
from ..types import Source
from .executors.local import LocalRun
from .ids import settings_key
from .manifest import Manifest
from .options import PipelineOptions
from .report import IngestReport, ProgressEvent
from .stages.commit import Committer
from .stages.embed import EmbedderLike, kind_of
from .stages.plan import Planner

log = logging.getLogger("vectorstream.pipeline")

EventCallback = Callable[[ProgressEvent], None]


class Pipeline:
    """Ingest any iterable of ``Source``s into a store with one embedder.

    The manifest is the store's own (``Manifest.of(store)``) unless one is given; rows of a
    per-machine manifest file from an older release (``legacy_manifest``) are taken over on first
    use. ``on_event`` is always called on the thread that called :meth:`run`.
    ``model_recipe``: how the Ray engine's actors load the model (``ModelRecipe``); without it
    they get ``embedder`` itself, which must then pickle.
    """

    def __init__(
        self,
        embedder: EmbedderLike,
        store: VectorStore,
        options: PipelineOptions | None = None,
        *,
        manifest: Manifest | None = None,
        legacy_manifest: str | Path | None = None,
        on_event: EventCallback | None = None,
        model_recipe: Any = None,
    ) -> None:
        self.embedder = embedder
        self.model_recipe = model_recipe
        self.store = store
        self.options = options or PipelineOptions()
        self.manifest = manifest
        self.legacy_manifest = legacy_manifest
        self.on_event = on_event
        self.options.check_model(embedder.max_tokens, embedder.num_special_tokens)
        if self.options.chunk.late_chunking and not callable(getattr(embedder, "late_plan", None)):
            raise ConfigError(
                f"late chunking needs a dense text model that exposes its token states; "
                f"{getattr(embedder, 'model_id', embedder)!r} does not"
            )
        # The last part is the version of what a source makes from the same settings: v2 joined
        # small sections and moved offsets into the document text, so older rows are redone.
        parts: list[object] = [embedder.fingerprint, self.options.chunk, self.options.parse, "v2"]
        if self.options.extensions_key:  # a custom parser or chunker changes what a source makes
            parts.append(self.options.extensions_key)
        self.settings = settings_key(*parts)

    def stages(self, remote: RemoteWrites | None = None) -> tuple[Planner, Committer]:
        """The plan and commit stages over this pipeline's store (opens its manifest).
        ``remote``: records are written by workers elsewhere (the Ray engine).

        Refuses a store that cannot hold this model's kind: the executors build these stages
        before any source is planned (except with :meth:`early_planner`, for a collection this
        run creates for the model's kind), so nothing is parsed, embedded or written for such a
        store.
        The check waits for the store to open, so it belongs here rather than in ``run``: the
        local executor opens the store (importing its client can take a second) while its
        worker processes start.
        """
        require_kind(self.store, kind_of(self.embedder))
        manifest = self.manifest if self.manifest is not None else Manifest.of(self.store)
        if self.legacy_manifest is not None:
            manifest.take_over(self.legacy_manifest)
        planner = Planner(manifest, self.settings, self.options.retry)
        committer = Committer(
            self.store, manifest, self.settings, self.options.retry, remote=remote
        )
        return planner, committer

    def early_planner(self) -> Planner | None:
        """A planner that needs no store, when the store is known to hold no manifest rows yet.

        Opening a store can take a second or more (importing LanceDB alone does); with a
        collection that did not exist before this run (``created_new``, set by ``ingest`` when it
        opens the store), every source is new and its plan is known without the manifest, so
        parsing and embedding start while the store opens. None otherwise: the caller plans
        with :meth:`stages` once the store is open. Nothing is written before the store is open
        and its kind checked, since the commit stage needs both.
        """
        if self.manifest is not None or getattr(self.store, "created_new", False) is not True:
            return None
        if self.legacy_manifest is not None and Path(self.legacy_manifest).exists():
            return None  # its rows are taken over when the store opens
        return Planner(None, self.settings, self.options.retry)

    def run(self, sources: Iterable[Source], *, roots: Sequence[str] = ()) -> IngestReport:
        if self.options.engine == "ray":
            from .executors.ray import RayRun

            # Before Ray starts: a cluster is slow to start for a run that cannot write.
            require_kind(self.store, kind_of(self.embedder))
            return RayRun(self, sources, roots).execute()
        return LocalRun(self, sources, roots).execute()


__all__ = ["EventCallback", "Pipeline", "PipelineOptions"]
