"""Shared CLI helpers: consoles, error rendering and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError, ModelError, StoreError, VectorstreamError

# Exit codes (documented in the README):
EXIT_OK = 0  # everything succeeded
EXIT_PARTIAL = 1  # the run finished, but some sources failed or records were rejected
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_FATAL = 3  # the run could not proceed (model or store unavailable)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C; the manifest is consistent, re-run to resume

err_console = Console(stderr=True)
out_console = Console()


def fail(message: str, code: int) -> NoReturn:
    # Escaped: a message quoting a glob such as "[z-a]" is not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn library exceptions into a one-line message and the documented exit code."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except (ModelError, StoreError) as exc:
        fail(str(exc), EXIT_FATAL)
    except VectorstreamError as exc:
        fail(str(exc), EXIT_FATAL)


def is_terminal() -> bool:
    return sys.stderr.isatty()


Echo = Callable[[str], None]
