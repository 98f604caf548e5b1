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

from ..chunking import ChunkOptions
from ..config import load_settings
from ..parsers import ParseOptions
from ..stores import open_store, scheme_of, store_kind
from ..stores.base import VectorStore
from ..types import Source
from .engine import EventCallback, Pipeline, PipelineOptions
from .manifest import Manifest
from .report import IngestReport, SourceFailure

PathInput = str | os.PathLike[str] | Source


def manifest_path(store_uri: str, collection: str, cache_dir: Path) -> Path:
    """Where the manifest of a (store, collection) lives.

    For the embedded LanceDB store it sits inside the store folder, so moving or deleting the
    folder moves or deletes both; for remote stores it lives in the cache, keyed by URI.
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


def ingest(
    paths: Iterable[PathInput] | PathInput,
    *,
    store: str | VectorStore | None = None,
    collection: str | None = None,
    model: Any = None,
    backend: str | None = None,
    quantized: bool = False,
    splitter: str = "markdown",
    chunk_tokens: int = 256,
    overlap: int = 32,
    workers: int | None = None,
    buffer: int = 1024,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    text_field: str | None = None,
    prune: bool = False,
    manifest: str | os.PathLike[str] | None = None,
    on_event: EventCallback | None = None,
) -> IngestReport:
    """Parse, chunk, embed and store ``paths`` (files, folders or ``Source`` objects).

    ``model`` is a model spec or an already loaded embedder; ``store`` a store URI or an open
    store. Unchanged sources (by the manifest) are skipped; changed ones are replaced.
    """
    settings = load_settings(
        model=model if isinstance(model, str) else None,
        store=store if isinstance(store, str) else None,
        collection=collection,
        backend=backend,
    )
    own_store = not isinstance(store, VectorStore) or isinstance(store, str)
    if own_store:
        store_kind(settings.store)  # an unknown scheme is a usage error before any work starts
        # Importing a store client can take a second or more (LanceDB: ~1.4 s here); do it while
        # the model loads and the parsers start.
        prewarm = threading.Thread(
            target=_import_adapter, args=(settings.store,), name="vs-prewarm", daemon=True
        )
        prewarm.start()
    if model is None or isinstance(model, str | os.PathLike):
        from ..models import load_model

        embedder = load_model(
            os.fspath(model) if model is not None else settings.model,
            backend=settings.backend,
            quantized=quantized,
        )
    else:
        embedder = model
    options = PipelineOptions(
        chunk=ChunkOptions(splitter=splitter, chunk_tokens=chunk_tokens, overlap=overlap),
        parse=ParseOptions(text_field=text_field),
        workers=workers,
        buffer=buffer,
        prune=prune,
        semantic_model=settings.model if splitter == "semantic" else None,
    )
    vstore: Any
    if own_store:
        # Opened on a thread: the parsing workers start meanwhile, and the writer waits for it
        # only at its first commit.
        vstore = _StoreOpening(settings.store, settings.collection, embedder.dim)
        uri, coll = settings.store, settings.collection
    else:
        vstore = store
        uri, coll = vstore.uri, vstore.collection
    mpath = (
        Path(manifest) if manifest is not None else manifest_path(uri, coll, settings.cache_path)
    )
    man = Manifest(mpath)
    problems: list[SourceFailure] = []
    sources, roots = _as_sources(paths, include, exclude, hidden, problems)
    try:
        report = Pipeline(embedder, vstore, options, manifest=man, on_event=on_event).run(
            sources, roots=roots
        )
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
        man.close()
        if own_store:
            vstore.close()


def _import_adapter(uri: str) -> None:
    with contextlib.suppress(Exception):  # a failure shows, clearly, when the store is opened
        importlib.import_module(store_kind(uri).target.partition(":")[0], "vectorstream.stores")


class _StoreOpening:
    """A store being opened on a background thread; attribute access waits for it.

    ``uri`` and ``collection`` are known at once, so reports and manifests never wait.
    """

    def __init__(self, uri: str, collection: str, dim: int) -> None:
        self.uri = uri
        self.collection = collection
        self._future: Future[VectorStore] = Future()
        threading.Thread(
            target=self._open, args=(uri, collection, dim), name="vs-open-store", daemon=True
        ).start()

    def _open(self, uri: str, collection: str, dim: int) -> None:
        try:
            self._future.set_result(open_store(uri, collection, dim=dim, mode="w"))
        except BaseException as exc:
            self._future.set_exception(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future.result(), name)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # an open that failed has nothing to close
            self._future.result().close()
