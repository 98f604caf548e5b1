"""Deterministic record identities.

A record id is a hash of (source, chunk index, chunk text, model fingerprint): re-running the same
input with the same model yields the same ids, so writes are idempotent upserts, and any change to
the text or the model yields new ids (the old ones are then removed as stale).
"""

from __future__ import annotations

import hashlib

_SEP = b"\x1f"


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def record_id(source: str, chunk_index: int, text: str, model_fingerprint: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (source, str(chunk_index), content_hash(text), model_fingerprint):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(_SEP)
    return h.hexdigest()


def settings_key(*parts: object) -> str:
    """A short stable hash of the settings that decide what a source produces."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(repr(part).encode())
        h.update(_SEP)
    return h.hexdigest()
