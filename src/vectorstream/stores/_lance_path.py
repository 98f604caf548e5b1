"""Where a LanceDB database lives, and what its folder tells without importing LanceDB.

Kept apart from ``_lance_db`` (which loads Arrow) so that a run can ask, in microseconds, whether
a collection exists before the LanceDB client has finished importing (about a second here).
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import SIDE_PREFIX

DEFAULT_PATH = "./.vectorstream"


def path_of(uri: str) -> Path:
    """``lancedb://PATH`` / ``lancedb:PATH`` / ``PATH`` → the folder that holds the tables."""
    raw = uri
    if raw.lower().startswith("lancedb://"):
        raw = raw[len("lancedb://") :]
    elif raw.lower().startswith("lancedb:"):
        raw = raw[len("lancedb:") :]
    return Path(raw or DEFAULT_PATH).expanduser()


def may_hold(path: Path, collection: str) -> bool:
    """Whether the folder may hold ``collection`` or one of its side tables, told from the names
    in it (each table is a ``<table>.lance`` folder; a test checks that layout against LanceDB).

    False only when it certainly holds none: the folder is missing, or lists neither. A folder
    that cannot be listed may hold anything.
    """
    side_prefix = f"{collection}{SIDE_PREFIX}"
    try:
        with os.scandir(path) as entries:
            return any(
                e.name == f"{collection}.lance" or e.name.startswith(side_prefix) for e in entries
            )
    except FileNotFoundError:
        return False
    except OSError:
        return True


__all__ = ["DEFAULT_PATH", "may_hold", "path_of"]
