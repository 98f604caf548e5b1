"""Plan: decide per source from the manifest whether to skip it or process it, and what to prune.

    unchanged stat under the same settings ─▶ Skip
    anything else                            ─▶ Task (with the known content hash, if the settings
                                                match, so identical bytes are recognised cheaply)

A source without a manifest row is never assumed to be new: the commit stage looks for its old
records and removes those the new run does not write again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ...stores.retry import RetryPolicy
from ...types import Source
from ..manifest import Manifest, ManifestEntry
from ._retry import call_with_retry
from .messages import Skip, Task


class Planner:
    """Plan decisions for one run. ``settings``: the key of the model + chunking + parsing setup."""

    def __init__(
        self, manifest: Manifest | None, settings: str, policy: RetryPolicy | None = None
    ) -> None:
        self.manifest = manifest
        self.settings = settings
        self.policy = policy or RetryPolicy()

    def plan(self, sources: Sequence[Source]) -> list[Task | Skip]:
        """One decision per source, in order; one manifest query for the whole batch."""
        known: dict[str, ManifestEntry] = {}
        if self.manifest is not None and sources:
            manifest, uris = self.manifest, [s.uri for s in sources]
            known = call_with_retry(
                self.policy, "read the manifest", lambda: manifest.get_many(uris)
            )
        return [self._decide(s, known.get(s.uri)) for s in sources]

    def _decide(self, source: Source, known: ManifestEntry | None) -> Task | Skip:
        if known is None or known.settings != self.settings:
            return Task(source, None, known)
        if (
            source.path is not None
            and source.size == known.size
            and source.mtime_ns == known.mtime_ns
        ):
            return Skip(source.uri, "unchanged")
        return Task(source, known.content_hash, known)

    def prune(self, seen: Iterable[str], roots: Sequence[str]) -> list[str]:
        """Sources the manifest knows that this run did not see and that are gone (or under one of
        ``roots``, the folders this run walked, so a file excluded by a new glob is dropped too)."""
        if self.manifest is None:
            return []
        seen = set(seen)
        out = []
        manifest = self.manifest
        for uri in call_with_retry(self.policy, "read the manifest", lambda: list(manifest.uris())):
            if uri in seen or not os.path.isabs(uri):
                continue
            under_root = any(uri == r or uri.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
            if os.path.exists(uri) and not under_root:
                continue
            out.append(uri)
        return out


__all__ = ["Planner"]
