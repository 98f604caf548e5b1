"""A LanceDB database folder: its URI, its vendor boundary and how table names are laid out.

One folder holds a table per collection and, beside each, its side tables, named
``<collection>__vs_<name>``. The marker ``__vs_`` is reserved: no collection may contain it, so
a side table is never mistaken for a collection, and listings of collections leave them out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError, VectorstreamError
from ..types import EmbeddingKind
from ._common import SIDE_PREFIX, side_name
from ._kinds import settle_kind
from ._lance_path import DEFAULT_PATH, path_of
from ._records import SECTION_INDEX, SECTION_INDEX_FIELD, schema_kind, table_schema

log = logging.getLogger("vectorstream.stores.lancedb")

SIDE_MARK = SIDE_PREFIX  # the marker every adapter puts between a collection and a side table
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn any LanceDB/Arrow exception into a ``StoreError`` raised from the original."""
    try:
        yield
    except VectorstreamError:
        raise
    except Exception as exc:  # the vendor boundary: lance raises ValueError/RuntimeError/OSError/…
        raise StoreError(f"LanceDB could not {what}: {exc}") from exc


def check_collection_name(collection: str) -> None:
    if not _NAME_RE.match(collection):
        raise ConfigError(
            f"collection name {collection!r} must use letters, digits, '_', '-' or '.'"
        )
    if SIDE_MARK in collection:
        raise ConfigError(
            f"collection name {collection!r} contains {SIDE_MARK!r}, which names side tables"
        )


def side_table_name(collection: str, name: str) -> str:
    """The LanceDB table that holds side table ``name`` of ``collection``."""
    return f"{collection}{SIDE_MARK}{side_name(name)}"


def is_side_table(table: str) -> bool:
    return SIDE_MARK in table


def connect(path: Path, refresh: timedelta | None) -> Any:
    """A connection to the database folder (``refresh``: LanceDB's read consistency interval)."""
    import lancedb

    with translated(f"open the database at {path}"):
        return lancedb.connect(str(path), read_consistency_interval=refresh)


def table_names(db: Any) -> set[str]:
    """Every table in the database, side tables included."""
    names: set[str] = set()
    token: str | None = None
    with translated("list tables"):
        while True:  # list_tables pages its answer
            page = db.list_tables(page_token=token)
            names.update(page.tables)
            token = page.page_token
            if not token:
                return names


def collection_names(db: Any) -> list[str]:
    """The collections in the database, sorted; side tables are not collections."""
    return sorted(n for n in table_names(db) if not is_side_table(n))


def side_tables_of(db: Any, collection: str) -> list[str]:
    """The LanceDB tables holding the side tables of ``collection``."""
    prefix = f"{collection}{SIDE_MARK}"
    return sorted(n for n in table_names(db) if n.startswith(prefix))


def open_collection(
    path: Path,
    collection: str,
    dim: int | None,
    mode: str | None,
    refresh: float | None,
    kind: EmbeddingKind | None = None,
) -> tuple[Any, Any, int, EmbeddingKind]:
    """Connect and open ``collection`` (creating it when ``dim`` is given and it is missing).

    Returns the connection, the table, its width and its embedding kind (read from the table;
    a new one is made for ``kind``, dense when ``None``). A reader (``mode="r"``) creates
    nothing; ``refresh`` is its read consistency interval in seconds (a writer sees its own
    commits without one).
    """
    if mode == "r" and not path.is_dir():
        raise StoreError(f"no LanceDB store at {path}; ingest something there first")
    interval = None if mode == "w" or refresh is None else timedelta(seconds=refresh)
    db = connect(path, interval)
    names = collection_names(db)
    if collection in names:
        with translated(f"open table {collection!r} at {path}"):
            table = db.open_table(collection)
            schema = table.schema
        stored_kind, stored = schema_kind(schema, f"table {collection!r} at {path}")
        settle_kind(f"collection {collection!r} at {path}", stored_kind, kind)
        if dim is not None and dim != stored:
            held = (
                f"sparse vectors over a vocabulary of {stored} terms"
                if stored_kind == "sparse"
                else f"{stored}-dimensional vectors"
            )
            raise ConfigError(
                f"collection {collection!r} at {path} holds {held} but the model gives {dim}; "
                "use another collection or the model it was built with"
            )
        return db, table, stored, stored_kind
    if dim is None:
        raise StoreError(
            f"collection {collection!r} does not exist at {path} (found: {names}); "
            "ingest into it first"
        )
    if mode == "r":
        raise StoreError(f"collection {collection!r} does not exist at {path}")
    new_kind: EmbeddingKind = kind or "dense"
    with translated(f"create table {collection!r} at {path}"):
        table = db.create_table(collection, schema=table_schema(dim, new_kind), exist_ok=True)
    log.info("created %s collection %r (width %d) at %s", new_kind, collection, dim, path)
    return db, table, dim, new_kind


def has_section_index(table: Any) -> bool:
    """Whether ``table`` has the ``section_index`` column (tables made before it do not)."""
    with translated("read the table schema"):
        return SECTION_INDEX in table.schema.names


def add_section_index(table: Any, collection: str) -> None:
    """Give a table made before ``section_index`` existed the column, all null (read as 0).

    An all-null column is a change of the table's schema alone: no data file is rewritten, so
    upgrading a large table costs one small commit. The caller holds the writer lock.
    """
    with translated(f"add the section_index column to {collection!r}"):
        if SECTION_INDEX in table.schema.names:
            return  # another handle of this writer got there first
        table.add_columns(SECTION_INDEX_FIELD)
    log.info("added the section_index column to collection %r", collection)


def list_collections(uri: str = DEFAULT_PATH) -> list[str]:
    """The collections of the LanceDB store at ``uri`` (none when the folder does not exist)."""
    path = path_of(uri)
    if not path.is_dir():
        return []
    return collection_names(connect(path, None))


__all__ = [
    "DEFAULT_PATH",
    "SIDE_MARK",
    "add_section_index",
    "check_collection_name",
    "collection_names",
    "connect",
    "has_section_index",
    "is_side_table",
    "list_collections",
    "open_collection",
    "path_of",
    "side_table_name",
    "side_tables_of",
    "table_names",
    "translated",
]
