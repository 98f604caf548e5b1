"""``vectorstream.ingest``: paths in, an ``IngestReport`` out."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..chunking import ChunkerFactory
from ..errors import ConfigError
from ..parsers import ParserRegistry
from ..stores import certainly_new, open_store, scheme_of, store_kind
from ..stores.base import VectorStore
from ..types import EmbeddingKind, Source
from .engine import EventCallback, Pipeline
from .executors._ray_ops import ModelRecipe
from .executors.pool import pin
from .options import RayOptions, ingest_options
from .report import IngestReport, SourceFailure
from .stages.embed import kind_of

PathInput = str | os.PathLike[str] | Source


def legacy_manifest_path(store_uri: str, collection: str, cache_dir: Path) -> Path:
    """Where releases before the in-store manifest kept the manifest of a (store, collection).

    The first run on such a store takes its rows over (see ``Manifest.take_over``).
    """
    if scheme_of(store_uri) == "lancedb":
        path = store_uri.split("://", 1)[1] if "://" in store_uri else store_uri
        return Path(path).expanduser() / "_manifests" / f"{collection}.sqlite"
    key = hashlib.blake2b(f"{store_uri}\x1f{collection}".encode(), digest_size=10).hexdigest()
    return cache_dir / "manifests" / f"{key}.sqlite"


def _as_sources(
    paths: Iterable[PathInput] | PathInput,
    include: Sequence[str],
    exclude: Sequence[str],
    hidden: bool,
    problems: list[SourceFailure],
) -> tuple[Iterator[Source], list[str]]:
    """Sources for ``paths``; paths the walk could not use are appended to ``problems``."""
    from ..sources import iter_files

    def walk(files: list[str | os.PathLike[str]]) -> Iterator[Source]:
        w = iter_files(files, include=include, exclude=exclude, hidden=hidden)
        try:
            yield from w
        finally:
            problems.extend(SourceFailure(p.path, "read", p.kind, p.reason) for p in w.problems)

    if isinstance(paths, str | os.PathLike | Source):
        items: list[PathInput] = [paths]
    else:
        items = list(paths)
    roots = [os.path.abspath(os.fspath(p)) for p in items if not isinstance(p, Source)]

    def gen() -> Iterator[Source]:
        files: list[str | os.PathLike[str]] = []
        for item in items:
            if isinstance(item, Source):
                if files:
                    yield from walk(files)
                    files = []
                yield item
            else:
                files.append(item)
        if files:
            yield from walk(files)

    return gen(), roots


def _check_paths(paths: Iterable[PathInput] | PathInput) -> list[PathInput]:
    """The inputs as a list; ``ConfigError`` when paths were given and none of them exists."""
    if isinstance(paths, str | os.PathLike | Source):
        items: list[PathInput] = [paths]
    else:
        items = list(paths)
    files = [os.fspath(p) for p in items if not isinstance(p, Source)]
    if files and not any(os.path.lexists(f) for f in files):
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        raise ConfigError(f"none of the given paths exists: {shown}")
    return items


def ingest(
    paths: Iterable[PathInput] | PathInput,
    *,
    store: str | VectorStore | None = None,
    collection: str | None = None,
    model: Any = None,
    backend: str | None = None,
    quantized: bool = False,
    kind: str | None = None,
    splitter: str = "markdown",
    chunk_tokens: int = 256,
    overlap: int = 32,
    late_chunking: bool = False,
    workers: int | None = None,
    buffer: int = 1024,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    text_field: str | None = None,
    prune: bool = False,
    parsers: ParserRegistry | None = None,
    chunker_factory: ChunkerFactory | None = None,
    inference_cpus: Sequence[int] | None = None,
    io_cpus: Sequence[int] | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    ray: RayOptions | None = None,
    on_event: EventCallback | None = None,
) -> IngestReport:
    """Parse, chunk, embed and store ``paths`` (files, folders or ``Source`` objects).

    ``model`` is a model spec or an already loaded embedder (``kind`` names a spec's kind where
    its folder does not: dense, sparse, multivector, image); ``store`` a store URI or an open
    store. Unchanged sources (by the manifest) are skipped; changed ones are replaced.
    ``parsers`` (a :class:`~vectorstream.parsers.ParserRegistry`) and ``chunker_factory`` (a
    :class:`~vectorstream.chunking.ChunkerFactory`) replace the built-in parsers and chunkers;
    with worker processes they must pickle. ``late_chunking``: embed each chunk with the text
    around it as context (dense models; see docs/chunking.md). ``inference_cpus`` / ``io_cpus`` pin the inference
    thread / the parsing, tokenising and writing to those CPUs. ``engine``: ``"local"`` (default)
    or ``"ray"`` (install ``vectorstream[ray]``): the stages run on the Ray cluster at
    ``ray_address`` (or ``RAY_ADDRESS``; a Ray instance on this machine when neither is set),
    tuned by ``ray`` (:class:`~vectorstream.pipeline.options.RayOptions`).

    Every option is checked before a model is loaded (or exported) or a store opened: a bad one
    raises :class:`~vectorstream.errors.ConfigError` at once.
    """
    store_given = store is not None and not isinstance(store, str)
    model_given = model is not None and not isinstance(model, str | os.PathLike)
    opts = ingest_options(
        store=store if isinstance(store, str) else None,
        collection=collection,
        model=model if isinstance(model, str | os.PathLike) else None,
        model_given=model_given,
        store_given=store_given,
        backend=backend,
        quantized=quantized,
        kind=kind,
        splitter=splitter,
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        late_chunking=late_chunking,
        workers=workers,
        buffer=buffer,
        include=include,
        exclude=exclude,
        hidden=hidden,
        text_field=text_field,
        prune=prune,
        parsers=parsers,
        chunker_factory=chunker_factory,
        inference_cpus=inference_cpus,
        io_cpus=io_cpus,
        engine=engine,
        ray=ray if ray_address is None else replace(ray or RayOptions(), address=ray_address),
    )
    items = _check_paths(paths)
    if opts.store is not None:
        # Importing a store client can take a second or more; do it while the model loads.
        prewarm = threading.Thread(
            target=_import_adapter,
            args=(opts.store, opts.pipeline.io_cpus),
            name="vs-prewarm",
            daemon=True,
        )
        prewarm.start()
    if model_given:
        embedder = model
    else:
        from ..models import load_model

        assert opts.model is not None
        embedder = load_model(
            opts.model, backend=opts.backend, quantized=opts.quantized, kind=opts.kind
        )
    opts.pipeline.check_model(embedder.max_tokens, embedder.num_special_tokens)
    vstore: Any
    if opts.store is not None and opts.collection is not None:
        # Opened on a thread: the parsing workers start meanwhile, and the writer waits for it
        # only at its first commit.
        # The collection is opened (or made) for the model's kind of embeddings.
        vstore = _StoreOpening(
            opts.store, opts.collection, embedder.dim, opts.pipeline.io_cpus, kind_of(embedder)
        )
        uri, coll = opts.store, opts.collection
    else:
        vstore = store
        uri, coll = vstore.uri, vstore.collection
    legacy = legacy_manifest_path(uri, coll, opts.cache_path)
    problems: list[SourceFailure] = []
    sources, roots = _as_sources(items, opts.include, opts.exclude, opts.hidden, problems)
    own_store = opts.store is not None
    try:
        recipe = None
        if not model_given and opts.model is not None:
            recipe = ModelRecipe(opts.model, opts.backend, opts.quantized, opts.kind)
        report = Pipeline(
            embedder,
            vstore,
            opts.pipeline,
            legacy_manifest=legacy,
            on_event=on_event,
            model_recipe=recipe,
        ).run(sources, roots=roots)
        if problems:
            report = replace(
                report,
                errors=tuple(sorted((*report.errors, *problems), key=lambda e: e.source)),
                files_failed=report.files_failed + len(problems),
            )
        if own_store and hasattr(vstore, "optimize") and not report.interrupted:
            vstore.optimize()
        return report
    finally:
        if own_store:
            vstore.close()


def _import_adapter(uri: str, cpus: tuple[int, ...] | None) -> None:
    pin(cpus)  # threads a client starts on import inherit this thread's CPUs
    with contextlib.suppress(Exception):  # a failure shows, clearly, when the store is opened
        importlib.import_module(store_kind(uri).target.partition(":")[0], "vectorstream.stores")


class _StoreOpening:
    """A store being opened on a background thread; attribute access waits for it.

    ``uri`` and ``collection`` are known at once, so reports and manifests never wait; so is
    ``created_new``: the collection certainly did not exist (nor its manifest) before this
    opening, told from the store's folder before the thread starts creating it.
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        cpus: tuple[int, ...] | None = None,
        kind: EmbeddingKind = "dense",
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.created_new = certainly_new(uri, collection)
        self._future: Future[VectorStore] = Future()
        threading.Thread(
            target=self._open,
            args=(uri, collection, dim, cpus, kind),
            name="vs-open-store",
            daemon=True,
        ).start()

    def _open(
        self,
        uri: str,
        collection: str,
        dim: int,
        cpus: tuple[int, ...] | None,
        kind: EmbeddingKind,
    ) -> None:
        pin(cpus)  # a store's own background threads inherit the CPUs of the thread opening it
        try:
            self._future.set_result(open_store(uri, collection, dim=dim, kind=kind, mode="w"))
        except BaseException as exc:
            self._future.set_exception(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future.result(), name)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # an open that failed has nothing to close
            self._future.result().close()
