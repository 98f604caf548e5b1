"""``vectorstream ingest``: stream files into a store with a progress display."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import EXIT_INTERRUPTED, err_console, is_terminal, library_errors, out_console


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)


def ingest_command(
    paths: Annotated[
        list[str], typer.Argument(help="Files or folders; '-' reads paths from stdin.")
    ],
    store: Annotated[
        str | None, typer.Option(help="Store URI, e.g. lancedb://./.vectorstream")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection (table) name.")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec: hub id or local folder.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="dense | sparse | multivector | image (default: the model folder's)"),
    ] = None,
    splitter: Annotated[
        str, typer.Option(help="tokens | sentences | markdown | semantic")
    ] = "markdown",
    chunk_tokens: Annotated[int, typer.Option(help="Maximum tokens per chunk.")] = 256,
    overlap: Annotated[int, typer.Option(help="Token overlap between windows.")] = 32,
    late_chunking: Annotated[
        bool,
        typer.Option(
            "--late-chunking", help="Embed each chunk with its surrounding text as context."
        ),
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Parsing processes (0: parse in this process).")
    ] = None,
    buffer: Annotated[int, typer.Option(help="Chunks in flight; bounds memory.")] = 1024,
    include: Annotated[list[str] | None, typer.Option(help="Glob of files to include.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of files to exclude.")] = None,
    hidden: Annotated[bool, typer.Option(help="Include hidden files and folders.")] = False,
    text_field: Annotated[str | None, typer.Option(help="CSV/JSONL field to embed.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Use the int8-quantised model.")] = False,
    backend: Annotated[str | None, typer.Option(help="onnx | torch (default: automatic)")] = None,
    prune: Annotated[
        bool, typer.Option(help="Remove records of sources that no longer exist.")
    ] = False,
    engine: Annotated[
        str | None, typer.Option(help="local | ray (default: VECTORSTREAM_ENGINE, else local)")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else start one).")
    ] = None,
    ray_actors: Annotated[
        int, typer.Option(help="Ray engine: embedding actors (model copies).")
    ] = 1,
    ray_actor_cpus: Annotated[float, typer.Option(help="Ray engine: CPUs per actor.")] = 1.0,
    ray_actor_gpus: Annotated[float, typer.Option(help="Ray engine: GPUs per actor.")] = 0.0,
    ray_task_cpus: Annotated[float, typer.Option(help="Ray engine: CPUs per parsing task.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Parse, chunk, embed and store PATHS, concurrently; unchanged files are skipped."""
    from ..pipeline import ingest
    from ..pipeline.options import RayOptions

    items: list[str] = []
    for p in paths:
        if p == "-":
            from ..sources import read_path_list

            items.extend(read_path_list(sys.stdin))
        else:
            items.append(p)
    renderer = _Renderer(enabled=not as_json or is_terminal())
    with library_errors(), renderer:
        report = ingest(
            [Path(p) for p in items],
            store=store,
            collection=collection,
            model=model,
            kind=kind,
            backend=backend,
            quantized=int8,
            splitter=splitter,
            chunk_tokens=chunk_tokens,
            overlap=overlap,
            late_chunking=late_chunking,
            workers=workers,
            buffer=buffer,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            hidden=hidden,
            text_field=text_field,
            prune=prune,
            engine=engine,
            ray=RayOptions(
                address=ray_address,
                actors=ray_actors,
                actor_cpus=ray_actor_cpus,
                actor_gpus=ray_actor_gpus,
                task_cpus=ray_task_cpus,
            ),
            on_event=renderer.on_event,
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _summary(report)
    if report.interrupted:
        err_console.print("[yellow]interrupted[/]: re-run the same command to resume.")
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(report.exit_code)


def _summary(report: object) -> None:
    from rich.table import Table

    from ..pipeline import IngestReport

    assert isinstance(report, IngestReport)
    table = Table(title="ingest", show_header=False, box=None)
    rate = report.chunks / report.seconds if report.seconds else 0.0
    rows = [
        ("store", f"{report.store} [{report.collection}]"),
        ("model", report.model),
        (
            "files",
            f"{report.files_ok} ingested, {report.files_skipped} unchanged, "
            f"{report.files_failed} failed, {report.files_pruned} pruned",
        ),
        ("chunks", f"{report.chunks} ({rate:.1f}/s), {report.tokens} tokens"),
        ("records", f"{report.vectors} written, {report.records_deleted} removed"),
        ("time", f"{report.seconds:.1f} s, peak memory {report.peak_rss_bytes / 2**20:.0f} MiB"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    out_console.print(table)
    if report.errors:
        errors = Table(title=f"{len(report.errors)} failed", header_style="bold red")
        for col in ("source", "stage", "error", "message"):
            errors.add_column(col, overflow="fold")
        for e in report.errors:
            errors.add_row(e.source, e.stage, e.error_type, e.message)
        out_console.print(errors)
    if report.rejected:
        out_console.print(f"[red]{len(report.rejected)} records rejected by the store[/]")


class _Renderer:
    """A rich progress bar on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = is_terminal()
        self.progress: Any = None
        self.task: Any = None
        self.last_line = 0.0

    def __enter__(self) -> _Renderer:
        if self.enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]ingest[/]"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                TextColumn("{task.fields[chunks]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[mem]}"),
                TextColumn("{task.fields[errors]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "ingest", total=None, files="", chunks="", rate="", mem="", errors=""
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_event(self, event: object) -> None:
        from ..pipeline import ProgressEvent

        assert isinstance(event, ProgressEvent)
        if not self.enabled:
            return
        p = event.progress
        finished = p.files_done + p.files_skipped + p.files_failed
        if event.kind == "source_failed":
            err_console.print(f"[red]failed[/] {event.source}: {event.message}", highlight=False)
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                total=p.files_seen if p.sources_exhausted else None,
                completed=finished,
                files=f"{finished}/{p.files_seen} files",
                chunks=f"{p.vectors} vectors",
                rate=f"{p.vectors_per_second:.0f} vec/s",
                mem=f"{p.rss_bytes / 2**20:.0f} MiB",
                errors=f"[red]{p.files_failed} errors[/]" if p.files_failed else "0 errors",
            )
        elif event.kind in ("progress", "finished"):
            now = time.monotonic()
            if event.kind == "finished" or now - self.last_line >= 5:
                self.last_line = now
                err_console.print(
                    f"ingest: {finished}/{p.files_seen} files, {p.vectors} vectors, "
                    f"{p.vectors_per_second:.0f} vec/s, {p.rss_bytes / 2**20:.0f} MiB, "
                    f"{p.files_failed} errors, {p.elapsed:.0f} s",
                    highlight=False,
                )
