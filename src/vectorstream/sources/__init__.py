"""Where documents come from: files and folders, path lists, in-memory texts.

Everything yielded here is a frozen :class:`~vectorstream.types.Source` (picklable, so the
pipeline can hand it to worker processes).
"""

from __future__ import annotations

from ._files import DEFAULT_SKIP_DIRS, FileWalk, iter_files
from ._fingerprint import fingerprint
from ._problems import SourceProblem
from ._texts import from_texts, read_path_list

__all__ = [
    "DEFAULT_SKIP_DIRS",
    "FileWalk",
    "SourceProblem",
    "fingerprint",
    "from_texts",
    "iter_files",
    "read_path_list",
]
