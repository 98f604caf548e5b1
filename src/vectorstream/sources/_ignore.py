"""``.gitignore``-style ignore files met during a walk (matching by pathspec, git's rules)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("vectorstream.sources")

#: Ignore files honoured by default: git's, and ripgrep's tool-neutral ``.ignore``.
DEFAULT_IGNORE_FILES: tuple[str, ...] = (".gitignore", ".ignore")


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """The ignore specs in force in one folder: ``(folder prefix, spec)`` pairs, outermost first.

    Each spec matches paths relative to the folder its file lives in, as git does; the deepest
    spec with a verdict on a path (ignore, or re-include with ``!``) decides.
    """

    specs: tuple[tuple[str, Any], ...] = ()

    def ignored(self, rel: str, is_dir: bool) -> bool:
        for prefix, spec in reversed(self.specs):
            sub = rel[len(prefix) :]
            verdict = spec.check_file(sub + "/" if is_dir else sub).include
            if verdict is not None:
                return bool(verdict)
        return False

    def enter(self, folder: str, prefix: str, names: tuple[str, ...]) -> IgnoreRules:
        """The rules for ``folder`` (whose path relative to the root is ``prefix``)."""
        added = []
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            spec = _load(path)
            if spec is not None:
                added.append((prefix, spec))
        if not added:
            return self
        return IgnoreRules((*self.specs, *added))


def _load(path: str) -> Any:
    try:
        import pathspec
    except ImportError:  # pathspec comes with the package; a broken install should not stop a walk
        logger.warning("pathspec is not installed; ignoring %s", path)
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return pathspec.GitIgnoreSpec.from_lines(fh)
    except (OSError, ValueError) as exc:
        logger.warning("cannot use ignore file %s: %s", path, exc)
        return None


__all__ = ["DEFAULT_IGNORE_FILES", "IgnoreRules"]
