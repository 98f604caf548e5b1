"""Every option of an ingest run, built from the arguments and validated in one place.

    ingest(...) / vectorstream ingest / POST /v1/ingest
      └─ ingest_options(...) ─▶ IngestOptions(store, collection, model, ..., pipeline=)
           every check here, before any model is loaded or exported, any store opened, any
           worker started; a bad option is a ConfigError (CLI exit 2, HTTP 400)

``PipelineOptions`` is what the engine reads; ``IngestOptions`` adds what ``ingest`` resolves
around it (store URI, collection, model spec, backend, file selection). Both are frozen, and
``PipelineOptions`` pickles to worker processes with its parser registry and chunker factory.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..chunking import ChunkerFactory, ChunkOptions, effective_limit, make_chunker
from ..config import load_settings
from ..errors import ConfigError, MissingDependencyError
from ..models._kinds import check_kind
from ..parsers import DEFAULT_REGISTRY, ParseOptions, ParserRegistry
from ..stores import store_kind
from ..stores.retry import RetryPolicy

MIN_BUFFER = 16  # chunks: below this the queues cannot hold one window and one commit


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``workers=True`` is a caller's mistake, not one worker.
    return isinstance(value, int) and not isinstance(value, bool)


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on (``os.sched_getaffinity(0)``)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError as exc:  # pragma: no cover - not Linux
        raise ConfigError("CPU affinity (inference_cpus, io_cpus) needs Linux") from exc


def _cpus(name: str, value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | frozenset | set):
        raise ConfigError(f"{name} must be a tuple of CPU numbers, got {value!r}")
    cpus = tuple(value)
    if not cpus or not all(_is_int(c) for c in cpus):
        raise ConfigError(f"{name} must be a non-empty tuple of CPU numbers, got {value!r}")
    allowed = allowed_cpus()
    outside = sorted(set(cpus) - allowed)
    if outside:
        raise ConfigError(
            f"{name}: CPUs {outside} are not ones this process may use; allowed: {sorted(allowed)}"
        )
    return tuple(sorted(set(cpus)))


def _describe(obj: object) -> str:
    """A stable name for a callable or object: what the manifest key records about it."""
    if isinstance(obj, functools.partial):
        return f"partial({_describe(obj.func)}, {obj.args!r}, {sorted(obj.keywords.items())!r})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return repr(obj)
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if isinstance(qualname, str):
        return f"{module}.{qualname}"
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_pickles(name: str, value: object, classes: Iterable[object] = ()) -> None:
    """Worker processes are spawned: what they need travels by pickle, so check it here.

    ``classes``: objects inside ``value`` whose home module matters too (a registry's parsers).
    """
    for obj in (value, *classes):
        module = getattr(obj, "__module__", None) or type(obj).__module__
        if module == "__main__":
            # Pickled by reference to ``__main__``, which a spawned worker does not import.
            raise ConfigError(
                f"{name}: {_describe(obj)} is defined in the __main__ script, which worker "
                "processes do not import; move it to an importable module, or use workers=0"
            )
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise ConfigError(
            f"{name} must pickle to reach the worker processes ({type(exc).__name__}: {exc}); "
            "define it at module level (not a lambda or a local function), or use workers=0"
        ) from exc


ENGINES = ("local", "ray")


@dataclass(frozen=True, slots=True)
class RayOptions:
    """How the Ray engine runs (``engine="ray"``).

    ``address``: the cluster to join (``None``: ``RAY_ADDRESS``, or a Ray instance started on this
    machine for the run). ``actors``: embedding actors, each holding one copy of the model.
    ``actor_cpus`` / ``actor_gpus``: resources each actor asks for (its inference threads are
    ``actor_cpus`` rounded up). ``task_cpus``: CPUs of a parsing task. ``object_store_bytes``: the
    object store of a Ray instance started here (ignored when joining a cluster).
    """

    address: str | None = None
    actors: int = 1
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    task_cpus: float = 1.0
    object_store_bytes: int = 512 * 2**20

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(f"ray address must be a non-empty string, got {self.address!r}")
        if not _is_int(self.actors) or self.actors < 1:
            raise ConfigError(f"ray actors must be an integer >= 1, got {self.actors!r}")
        for name in ("actor_cpus", "actor_gpus", "task_cpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"ray {name} must be a number >= 0, got {value!r}")
        if not self.actor_cpus and not self.actor_gpus:
            raise ConfigError("a ray actor needs CPUs or GPUs (actor_cpus or actor_gpus > 0)")
        if not _is_int(self.object_store_bytes) or self.object_store_bytes < 64 * 2**20:
            raise ConfigError(
                f"ray object_store_bytes must be at least 64 MiB, got {self.object_store_bytes!r}"
            )


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """How a pipeline runs; validated when made (``ConfigError``), picklable.

    ``workers``: parsing processes (``None``: one per core beyond the model's; ``0``: a thread of
    this process). ``buffer``: chunks in flight between the parsers and the store, the bound on
    memory. ``window``: chunks tokenised and embedded together (sorted by length inside).
    ``commit_rows`` / ``commit_seconds``: a store commit happens at this many rows or this long
    after the first pending row. ``prune``: remove the records of sources that no longer exist
    under the given roots. ``semantic_model``: the model spec the ``semantic`` splitter loads in
    each worker. ``retry``: bounds on retrying store calls. ``worker_nice``: scheduling niceness
    of the parsing processes (0 to 19; lower it when other CPU-heavy work shares the machine).
    ``inference_cpus`` / ``io_cpus``: CPU affinity of the inference thread, and of parsing,
    tokenising and writing (``None``: not pinned); each must be CPUs this process may use.
    ``parsers``: a :class:`~vectorstream.parsers.ParserRegistry` (``None``: the built-in
    parsers). ``chunker_factory``: a :class:`~vectorstream.chunking.ChunkerFactory` (``None``:
    :func:`~vectorstream.chunking.make_chunker`). With worker processes, both must pickle.
    ``engine``: ``"local"`` (this machine) or ``"ray"`` (a Ray cluster, set up by ``ray``).
    """

    chunk: ChunkOptions = field(default_factory=ChunkOptions)
    parse: ParseOptions = field(default_factory=ParseOptions)
    workers: int | None = None
    buffer: int = 1024
    window: int = 256
    commit_rows: int = 4096
    commit_seconds: float = 1.0
    prune: bool = False
    semantic_model: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    worker_nice: int = 19
    inference_cpus: tuple[int, ...] | None = None
    io_cpus: tuple[int, ...] | None = None
    parsers: ParserRegistry | None = None
    chunker_factory: ChunkerFactory | None = None
    engine: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)

    def __post_init__(self) -> None:
        for name, kind in (
            ("chunk", ChunkOptions),
            ("parse", ParseOptions),
            ("retry", RetryPolicy),
            ("ray", RayOptions),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 0):
            raise ConfigError(f"workers must be an integer >= 0 (or None), got {self.workers!r}")
        if not _is_int(self.buffer) or self.buffer < MIN_BUFFER:
            raise ConfigError(f"buffer must be at least {MIN_BUFFER} chunks, got {self.buffer!r}")
        if not _is_int(self.window) or self.window < 1:
            raise ConfigError(f"window must be a positive integer, got {self.window!r}")
        if not _is_int(self.commit_rows) or self.commit_rows < 1:
            raise ConfigError(f"commit_rows must be a positive integer, got {self.commit_rows!r}")
        seconds = self.commit_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ConfigError(f"commit_seconds must be a positive number, got {seconds!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.engine == "ray" and (self.inference_cpus or self.io_cpus):
            raise ConfigError(
                "inference_cpus / io_cpus pin threads of the local engine; with the Ray engine "
                "the cluster places the work (ray actor_cpus, task_cpus)"
            )
        if not isinstance(self.prune, bool):
            raise ConfigError(f"prune must be True or False, got {self.prune!r}")
        if self.semantic_model is not None and (
            not isinstance(self.semantic_model, str) or not self.semantic_model.strip()
        ):
            raise ConfigError(f"semantic_model must be a model spec, got {self.semantic_model!r}")
        if not _is_int(self.worker_nice) or not 0 <= self.worker_nice <= 19:
            raise ConfigError(f"worker_nice must be an integer 0..19, got {self.worker_nice!r}")
        object.__setattr__(self, "inference_cpus", _cpus("inference_cpus", self.inference_cpus))
        object.__setattr__(self, "io_cpus", _cpus("io_cpus", self.io_cpus))
        if self.parsers is not None and not isinstance(self.parsers, ParserRegistry):
            raise ConfigError(
                f"parsers must be a ParserRegistry (DEFAULT_REGISTRY.with_parser(...)), "
                f"got {type(self.parsers).__name__}"
            )
        if self.chunker_factory is not None and not callable(self.chunker_factory):
            raise ConfigError(
                f"chunker_factory must be callable like make_chunker, got {self.chunker_factory!r}"
            )
        if self.workers != 0:
            if self.parsers is not None:
                _check_pickles("parsers", self.parsers, (p for _, p in self.parsers.parsers))
            if self.chunker_factory is not None:
                _check_pickles("chunker_factory", self.chunker_factory)

    @property
    def extensions_key(self) -> str:
        """What the custom parsers and chunker factory are, for the manifest's settings key.

        Empty with the built-in ones, so adding these fields changed no existing manifest key;
        otherwise a change of parser or factory (by class / qualified name, or a dataclass's
        ``repr``) makes every source count as changed.
        """
        parts = []
        if self.parsers is not None and self.parsers != DEFAULT_REGISTRY:
            parts.append(f"parsers[{self.parsers.key}]")
        if self.chunker_factory is not None and self.chunker_factory is not make_chunker:
            parts.append(f"chunker[{_describe(self.chunker_factory)}]")
        return ";".join(parts)

    def check_model(self, max_tokens: int, num_special_tokens: int = 2) -> None:
        """Raise ``ConfigError`` if the built-in chunker cannot honour these options for a model.

        ``overlap < chunk_tokens`` is checked when the options are made; this also checks it
        against the model's own limit (``max_tokens`` minus its special tokens), which is only
        known once the model is. A custom ``chunker_factory`` is trusted with its own limits.
        """
        if self.chunker_factory is not None and self.chunker_factory is not make_chunker:
            return
        limit = effective_limit(self.chunk, max_tokens, num_special_tokens)
        if limit <= 0:
            raise ConfigError(
                f"the model accepts {max_tokens} tokens including {num_special_tokens} special "
                "ones: no room for a chunk"
            )
        if self.chunk.overlap >= limit:
            raise ConfigError(
                f"overlap ({self.chunk.overlap}) must be smaller than the chunk size, {limit} "
                f"tokens (chunk_tokens={self.chunk.chunk_tokens}, model limit {max_tokens} - "
                f"{num_special_tokens} special tokens); lower --overlap"
            )


# -- collection names ------------------------------------------------------------------------

# What every store accepts is checked for all; the rules of particular stores (the same ones
# their adapters enforce when they open) are checked here too, so a bad name fails before the
# model loads rather than after.
_PORTABLE = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,255}$")
_STORE_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "lancedb": (
        re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"),
        "LanceDB collection names use letters, digits, '_', '-' or '.' (not first)",
    ),
    "chroma": (
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$"),
        "Chroma collection names have 3-512 characters from [a-zA-Z0-9._-], starting and "
        "ending with a letter or digit",
    ),
    "elasticsearch": (
        re.compile(r"^[^A-Z_+\-][^A-Z]*$"),
        "Elasticsearch index names are lowercase and cannot start with _, - or +",
    ),
    "opensearch": (
        re.compile(r"^[^A-Z_+\-][^A-Z]*$"),
        "OpenSearch index names are lowercase and cannot start with _, - or +",
    ),
    "weaviate": (
        re.compile(r"^[A-Za-z][_0-9A-Za-z]*$"),
        "Weaviate class names use letters, digits and _, starting with a letter",
    ),
}


def check_collection(store_uri: str, collection: str) -> None:
    """Raise ``ConfigError`` unless ``collection`` is a name the store at ``store_uri`` takes.

    Names every store takes are checked always; a store's own rules when its scheme is known.
    """
    if not isinstance(collection, str) or not _PORTABLE.match(collection):
        raise ConfigError(
            f"collection must be 1-255 characters without '/', '\\' or control characters, "
            f"got {collection!r}"
        )
    if collection in (".", ".."):
        raise ConfigError(f"collection cannot be {collection!r}")
    try:
        kind = store_kind(store_uri).name
    except ConfigError:
        return  # the scheme is checked, and reported, where the store is chosen
    rule = _STORE_RULES.get(kind)
    if rule is not None and not rule[0].match(collection):
        raise ConfigError(f"{rule[1]}: {collection!r}")


def _globs(name: str, patterns: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{name} must be glob patterns (strings), got {patterns!r}")
    from ..sources._globs import GlobSet

    for pattern in patterns:
        if not pattern.strip():
            raise ConfigError(f"{name}: an empty glob pattern matches nothing; remove it")
        try:
            GlobSet.of((pattern,)).matches("", "")  # compiles it
        except re.error as exc:
            raise ConfigError(f"{name}: invalid glob {pattern!r}: {exc}") from exc
    return tuple(patterns)


# -- ingest ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """The arguments of one ``ingest`` call, resolved (argument > environment > file > default)
    and validated. ``store``/``model`` are ``None`` when the caller passed an open store / a
    loaded model, which ``ingest`` uses as they are."""

    store: str | None
    collection: str | None
    model: str | None
    backend: str | None
    quantized: bool
    kind: str | None  # the model kind the caller named (None: the folder's own)
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    hidden: bool
    cache_path: Path  # where exported models and older releases' manifests live
    pipeline: PipelineOptions


def ingest_options(
    *,
    store: str | None = None,
    collection: str | None = None,
    model: str | os.PathLike[str] | None = None,
    model_given: bool = False,
    store_given: bool = False,
    backend: str | None = None,
    quantized: bool = False,
    kind: str | None = None,
    splitter: str = "markdown",
    chunk_tokens: int = 256,
    overlap: int = 32,
    semantic_threshold: float | None = None,
    late_chunking: bool = False,
    workers: int | None = None,
    buffer: int = 1024,
    include: str | Sequence[str] = (),
    exclude: str | Sequence[str] = (),
    hidden: bool = False,
    text_field: str | None = None,
    prune: bool = False,
    parsers: ParserRegistry | None = None,
    chunker_factory: ChunkerFactory | None = None,
    inference_cpus: Sequence[int] | None = None,
    io_cpus: Sequence[int] | None = None,
    engine: str | None = None,
    ray: RayOptions | None = None,
) -> IngestOptions:
    """Build and validate the options of an ingest run; raises ``ConfigError``.

    Reads settings (``VECTORSTREAM_*``, ``vectorstream.toml``) for what is not given, and never
    loads a model, opens a store or starts a process. ``model_given`` / ``store_given``: the
    caller has a loaded model / an open store, so no spec or URI is resolved for it (the
    collection is then the store's).
    """
    settings = load_settings(
        model=None if model_given or model is None else os.fspath(model),
        store=None if store_given else store,
        collection=None if store_given else collection,
        backend=backend,
        engine=engine,
    )
    if settings.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise MissingDependencyError("ray[data]", "ray")
    if ray is not None and not isinstance(ray, RayOptions):
        raise ConfigError(f"ray must be a RayOptions, got {ray!r}")
    ray_options = ray or RayOptions()
    if ray_options.address is None and settings.ray_address is not None:
        ray_options = dataclasses.replace(ray_options, address=settings.ray_address)
    if not isinstance(quantized, bool):
        raise ConfigError(f"quantized (--int8) must be True or False, got {quantized!r}")
    if not model_given and quantized and settings.backend == "torch":
        raise ConfigError(
            "--int8 runs the int8 ONNX graph; it needs the onnx backend, not torch "
            "(drop --backend torch or VECTORSTREAM_BACKEND=torch)"
        )
    if check_kind(kind) == "rerank":
        raise ConfigError(
            "a reranker scores (query, text) pairs and makes no vectors to ingest; use an "
            "embedding model (dense, sparse, multivector or image)"
        )
    if text_field is not None and (not isinstance(text_field, str) or not text_field.strip()):
        raise ConfigError(f"text_field must be a field name, got {text_field!r}")
    if not isinstance(hidden, bool):
        raise ConfigError(f"hidden must be True or False, got {hidden!r}")
    if not store_given:
        store_kind(settings.store)  # an unknown scheme names the known ones
        check_collection(settings.store, settings.collection)
    pipeline = PipelineOptions(
        chunk=ChunkOptions(
            splitter=splitter,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            semantic_threshold=semantic_threshold,
            late_chunking=late_chunking,
        ),
        parse=ParseOptions(text_field=text_field),
        workers=workers,
        buffer=buffer,
        prune=prune,
        semantic_model=settings.model if splitter == "semantic" else None,
        inference_cpus=tuple(inference_cpus) if inference_cpus is not None else None,
        io_cpus=tuple(io_cpus) if io_cpus is not None else None,
        parsers=parsers,
        chunker_factory=chunker_factory,
        engine=settings.engine,
        ray=ray_options,
    )
    return IngestOptions(
        store=None if store_given else settings.store,
        collection=None if store_given else settings.collection,
        model=None if model_given else settings.model,
        backend=settings.backend,
        quantized=quantized,
        kind=check_kind(kind),
        include=_globs("include", include),
        exclude=_globs("exclude", exclude),
        hidden=hidden,
        cache_path=settings.cache_path,
        pipeline=pipeline,
    )


__all__ = [
    "MIN_BUFFER",
    "IngestOptions",
    "PipelineOptions",
    "RayOptions",
    "allowed_cpus",
    "check_collection",
    "ingest_options",
]
