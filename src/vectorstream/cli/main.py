"""Entry point of the ``vectorstream`` command; each command group registers itself."""

from __future__ import annotations

import logging
import os

import typer

from . import chat as _chat
from . import ingest as _ingest
from . import models as _models
from . import search as _search
from . import serve as _serve

app = typer.Typer(
    name="vectorstream",
    help="Stream documents into vectors: parse, chunk, embed and store, concurrently.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (_models, _ingest, _search, _serve, _chat):
    _module.register(app)


@app.callback()
def _root() -> None:
    """Stream documents into vectors: parse, chunk, embed and store, concurrently."""


@app.command()
def version() -> None:
    """Print the installed version."""
    from .. import __version__

    typer.echo(__version__)


def main() -> None:
    level = os.environ.get("VECTORSTREAM_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
