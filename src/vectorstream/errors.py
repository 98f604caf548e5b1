"""The exception tree of vectorstream.

    VectorstreamError
    ├── ConfigError          bad settings, unknown URI scheme, invalid option combination
    │   └── ChunkingError    a chunker was given impossible settings (or its embed function failed)
    ├── ModelError           a model cannot be found, loaded or run
    ├── ParseError           a source cannot be read or parsed
    │   └── UnsupportedFormatError   recognised but needs something we do not have (an image model)
    ├── StoreError           a vector store refused or failed an operation
    │   ├── StoreUnavailableError    the store cannot be reached (after retries)
    │   ├── StoreLockedError         another writer holds an embedded store
    │   └── RecordRejectedError      a store refused specific records (dimension, NaN, size)
    ├── MissingDependencyError       an optional extra is not installed (message names it)
    └── PipelineError        the streaming engine failed as a whole (not a single source)

Every error raised from an underlying library is translated into the most specific of these and
raised ``from`` the original, so callers never need to import a vendor's exceptions.

Options are validated before any work starts (``vectorstream.pipeline.options``), and every bad
option is a :class:`ConfigError`: the command line exits with code 2, the HTTP service answers 400.
"""

from __future__ import annotations


class VectorstreamError(Exception):
    """Base class of every error vectorstream raises on purpose."""


class ConfigError(VectorstreamError):
    """Invalid configuration: an option, a URI or a combination of settings."""


class ModelError(VectorstreamError):
    """A model could not be resolved, loaded or run."""


class ParseError(VectorstreamError):
    """A source could not be read or parsed."""


class UnsupportedFormatError(ParseError):
    """A source was recognised but cannot be handled with what is installed or configured."""


class ChunkingError(ConfigError):
    """A chunker was configured with settings it cannot honour.

    A :class:`ConfigError`: bad chunking options are bad options like any other.
    """


class StoreError(VectorstreamError):
    """A vector store failed an operation."""


class StoreUnavailableError(StoreError):
    """A vector store could not be reached, even after retrying."""


class StoreLockedError(StoreError):
    """Another process is writing to the same embedded store."""


class RecordRejectedError(StoreError):
    """A store refused some records; ``rejected`` maps record id to the reason."""

    def __init__(self, message: str, rejected: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.rejected: dict[str, str] = dict(rejected or {})


class MissingDependencyError(VectorstreamError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed; install it with: pip install 'vectorstream[{extra}]'"
        )
        self.package = package
        self.extra = extra


class PipelineError(VectorstreamError):
    """The streaming engine failed as a whole (not a single source)."""


__all__ = [
    "ChunkingError",
    "ConfigError",
    "MissingDependencyError",
    "ModelError",
    "ParseError",
    "PipelineError",
    "RecordRejectedError",
    "StoreError",
    "StoreLockedError",
    "StoreUnavailableError",
    "UnsupportedFormatError",
    "VectorstreamError",
]
