"""``vectorstream search``: ranked hits from a store."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ._common import library_errors, out_console


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)


def search_command(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    store: Annotated[str | None, typer.Option(help="Store URI.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec (must match the store's).")] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="dense | sparse | multivector | image: the model's kind (default: its folder's)"
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of hits.")] = 5,
    where: Annotated[
        list[str] | None, typer.Option(help="Filter key=value (repeatable; key=a,b for one-of).")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="topk | range (DIPR: within beta of the best).")
    ] = "topk",
    beta: Annotated[float | None, typer.Option(help="Range width for --mode range.")] = None,
    rerank: Annotated[
        str | None,
        typer.Option(help="Cross-encoder spec: rerank the first --rerank-candidates hits."),
    ] = None,
    rerank_candidates: Annotated[
        int, typer.Option(help="Hits the store returns for --rerank to order (then -k shown).")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Embed QUERY and print the best chunks with source, page and score."""
    from ..search import search
    from ..stores import parse_where

    with library_errors():
        filters = parse_where(where or [])
        query_model: Any = model
        if kind is not None:
            from ..errors import ConfigError
            from ..models import load_model
            from ..models._kinds import check_kind

            if check_kind(kind) == "rerank":
                raise ConfigError("a reranker makes no query vector; use it with --rerank")
            query_model = load_model(model, kind=kind)
        reranker = None
        if rerank is not None:
            from ..search.rerank import load_reranker

            reranker = load_reranker(rerank)  # a bad spec fails before the store is asked
        hits = search(
            query,
            store=store,
            collection=collection,
            model=query_model,
            k=max(k, rerank_candidates) if reranker is not None else k,
            where=filters or None,
            mode=mode,
            beta=beta,
        )
        if reranker is not None:
            from ..search.rerank import rerank_hits

            hits = rerank_hits(query, hits, reranker, top_n=k)
    if as_json:
        sys.stdout.write(
            json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, indent=2) + "\n"
        )
        return
    if not hits:
        out_console.print("no hits")
        return
    for rank, hit in enumerate(hits, 1):
        where_txt = (
            hit.source
            + (f" p.{hit.page}" if hit.page is not None else "")
            + f" chars {hit.start}–{hit.end}"
        )
        heading = " › ".join(hit.headings)
        out_console.print(
            f"[bold]{rank}.[/] [cyan]{hit.score:.3f}[/] {where_txt}"
            + (f"  [dim]{heading}[/]" if heading else ""),
            highlight=False,
        )
        text = " ".join(hit.text.split())
        out_console.print(f"   {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False)
