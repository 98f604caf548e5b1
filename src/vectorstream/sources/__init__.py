"""Where documents come from: files and folders, path lists, URLs, in-memory texts.

Everything yielded here is a frozen :class:`~vectorstream.types.Source` (picklable, so the
pipeline can hand it to worker processes).
"""

from __future__ import annotations

from ._files import DEFAULT_SKIP_DIRS, FileWalk, iter_files
from ._fingerprint import fingerprint
from ._ignore import DEFAULT_IGNORE_FILES
from ._problems import SourceProblem
from ._texts import from_texts, read_path_list
from ._urls import UrlFetch, is_url, iter_urls

__all__ = [
    "DEFAULT_IGNORE_FILES",
    "DEFAULT_SKIP_DIRS",
    "FileWalk",
    "SourceProblem",
    "UrlFetch",
    "fingerprint",
    "from_texts",
    "is_url",
    "iter_files",
    "iter_urls",
    "read_path_list",
]
