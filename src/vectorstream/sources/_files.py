"""Files and folders as sources: a recursive, sorted, loop-safe walk with include/exclude globs."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence

from ..errors import ConfigError
from ..types import Source
from ._globs import GlobSet
from ._ignore import DEFAULT_IGNORE_FILES, IgnoreRules
from ._problems import SourceProblem

logger = logging.getLogger("vectorstream.sources")

#: Folders never descended into unless given explicitly as a root: version control metadata and
#: dependency/bytecode caches, which are large and never what a user means to index.
DEFAULT_SKIP_DIRS: frozenset[str] = frozenset(
    {".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", "node_modules", "__pycache__"}
)


class FileWalk(Iterator[Source]):
    """An iterator of file :class:`Source` objects that records what it could not read.

    Iterate it once. ``problems`` fills up as the walk goes (missing paths, unreadable folders,
    broken links); read it after the iteration ends. The walk raises
    :class:`~vectorstream.errors.ConfigError` at the end only if paths were given and *none* of
    them exists, since that is almost always a typo rather than a partial failure.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        hidden: bool = False,
        follow_symlinks: bool = True,
        skip_dirs: Collection[str] = DEFAULT_SKIP_DIRS,
        ignore_files: Sequence[str] = DEFAULT_IGNORE_FILES,
    ) -> None:
        self.problems: list[SourceProblem] = []
        # One path given bare would otherwise be walked character by character.
        self._paths: Iterable[str | os.PathLike[str]] = (
            [paths] if isinstance(paths, str | os.PathLike) else paths
        )
        self._include = GlobSet.of(include)
        self._exclude = GlobSet.of(exclude)
        self._hidden = hidden
        self._follow = follow_symlinks
        self._skip_dirs = frozenset(skip_dirs)
        self._ignore_files = tuple(ignore_files)
        self._gen = self._walk()

    def __iter__(self) -> FileWalk:
        return self

    def __next__(self) -> Source:
        return next(self._gen)

    def _problem(self, path: str, kind: str, reason: str) -> None:
        problem = SourceProblem(path=path, kind=kind, reason=reason)
        logger.warning("skipping %s", problem)
        self.problems.append(problem)

    def _walk(self) -> Iterator[Source]:
        # Only a count and the first few names are kept: a path list from stdin may be huge, and
        # memory must not grow with it.
        given = 0
        shown: list[str] = []
        found_any = False
        # Folders already walked, by (device, inode): breaks symlink loops and keeps a folder
        # reachable through two links (or given twice) from being indexed twice. It grows with
        # the number of folders only, never with the number of files.
        dirs_seen: set[tuple[int, int]] = set()
        for raw in self._paths:
            text = os.fspath(raw)
            given += 1
            if len(shown) < 5:
                shown.append(text)
            absolute = os.path.abspath(text)
            try:
                st = os.stat(absolute)
            except FileNotFoundError:
                if os.path.lexists(absolute):
                    self._problem(absolute, "broken-link", "symbolic link to a missing target")
                else:
                    self._problem(absolute, "missing", "no such file or folder")
                continue
            except OSError as exc:
                self._problem(absolute, "unreadable", exc.strerror or str(exc))
                continue
            found_any = True
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in dirs_seen:
                    continue
                dirs_seen.add(key)
                yield from self._walk_dir(absolute, dirs_seen)
            elif stat.S_ISREG(st.st_mode):
                # A file named explicitly is taken as is: include/exclude/hidden rules are for
                # what a folder walk discovers (as in ripgrep and git). A file named twice is
                # yielded twice; record IDs are deterministic, so that costs time, not correctness.
                yield _file_source(absolute, st)
            else:
                self._problem(absolute, "not-a-file", "not a regular file or folder")
        if given and not found_any:
            names = ", ".join(shown) + (
                f" and {given - len(shown)} more" if given > len(shown) else ""
            )
            raise ConfigError(f"none of the given paths exists: {names}")

    def _entries(self, folder: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._problem(folder, "unreadable", exc.strerror or str(exc))
            return []

    def _walk_dir(self, root: str, dirs_seen: set[tuple[int, int]]) -> Iterator[Source]:
        # An explicit stack of (entries, relative prefix, ignore rules) rather than recursion:
        # depth is bounded by the file system, not by Python's recursion limit.
        rules = IgnoreRules().enter(root, "", self._ignore_files)
        stack: list[tuple[Iterator[os.DirEntry[str]], str, IgnoreRules]] = [
            (iter(self._entries(root)), "", rules)
        ]
        while stack:
            entries, prefix, rules = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name = entry.name
            rel = prefix + name
            if not self._hidden and name.startswith("."):
                continue
            try:
                is_link = entry.is_symlink()
                if is_link and not self._follow:
                    continue
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if entry.is_symlink():
                    self._problem(entry.path, "broken-link", "symbolic link to a missing target")
                # else: removed while we walked; nothing to index.
                continue
            except OSError as exc:
                self._problem(entry.path, "unreadable", exc.strerror or str(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                if name in self._skip_dirs or self._exclude.matches(rel, name):
                    continue
                if rules.ignored(rel, is_dir=True):
                    continue
                key = (st.st_dev, st.st_ino)
                if key in dirs_seen:
                    logger.debug("not walking %s again (symbolic link loop or alias)", entry.path)
                    continue
                dirs_seen.add(key)
                inner = rules.enter(entry.path, rel + "/", self._ignore_files)
                stack.append((iter(self._entries(entry.path)), rel + "/", inner))
            elif stat.S_ISREG(st.st_mode):
                if self._include and not self._include.matches(rel, name):
                    continue
                if self._exclude.matches(rel, name) or rules.ignored(rel, is_dir=False):
                    continue
                yield _file_source(entry.path, st)
            # Sockets, FIFOs and devices found in a walk are not documents: skipped silently.


def _file_source(path: str, st: os.stat_result) -> Source:
    # uri is the absolute path as walked (links in it kept, not resolved), so the same tree
    # walked twice gives the same identities.
    return Source(uri=path, path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def iter_files(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    follow_symlinks: bool = True,
    skip_dirs: Collection[str] = DEFAULT_SKIP_DIRS,
    ignore_files: Sequence[str] = DEFAULT_IGNORE_FILES,
) -> FileWalk:
    """Walk files and folders recursively, in sorted order, yielding one :class:`Source` per file.

    ``include``/``exclude`` are globs (``*``, ``?``, ``[..]``, ``**``) matched against the path
    relative to the given root and against the name; ``exclude`` also prunes folders. Names
    starting with ``.`` are skipped unless ``hidden``; folders in ``skip_dirs`` (VCS metadata,
    ``node_modules``) always are. Ignore files named in ``ignore_files`` (``.gitignore`` and
    ``.ignore`` by default; ``()`` to disable) are honoured with git's rules in the folder they
    are found in and below. Symbolic links are followed when ``follow_symlinks`` (loops are
    detected); a symbolic link given as a path is always followed.

    Paths that do not exist are recorded in the returned walk's ``problems``; if none of the
    given paths exists the walk raises :class:`~vectorstream.errors.ConfigError`.
    """
    return FileWalk(
        paths,
        include=include,
        exclude=exclude,
        hidden=hidden,
        follow_symlinks=follow_symlinks,
        skip_dirs=skip_dirs,
        ignore_files=ignore_files,
    )


__all__ = ["DEFAULT_SKIP_DIRS", "FileWalk", "iter_files"]
