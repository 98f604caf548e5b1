"""Options that shape how a source becomes sections."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """How to parse.

    ``text_field``: the CSV column / JSONL key to embed; ``None`` picks ``text``, ``content`` or
    ``body`` when present, else renders every field as ``key: value`` lines.
    ``metadata_fields``: CSV columns / JSONL keys copied into each row's section metadata.
    ``max_section_chars``: no section is longer; longer text is cut at a paragraph, line or
    space boundary (hard cut if there is none), which also bounds memory while streaming.
    ``encoding``: force a text encoding instead of detecting it (a BOM still wins).
    """

    text_field: str | None = None
    metadata_fields: tuple[str, ...] = ()
    max_section_chars: int = 1_000_000
    encoding: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.metadata_fields, str):
            raise ConfigError("metadata_fields must be a tuple of names, not a single string")
        object.__setattr__(self, "metadata_fields", tuple(self.metadata_fields))
        if self.max_section_chars < 16:
            raise ConfigError(
                f"max_section_chars must be at least 16, got {self.max_section_chars}"
            )
        if self.encoding is not None:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError as exc:
                raise ConfigError(f"unknown text encoding {self.encoding!r}") from exc


__all__ = ["ParseOptions"]
