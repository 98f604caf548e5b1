"""``POST /v1/highlights``: the best chunks of whole documents for a query, chunk vectors cached.

JSON: ``{query, documents: [{id, text}], k_per_document, max_characters, chunking}``. Multipart:
fields ``query``, ``k_per_document``, ``max_characters``, ``splitter``, ``chunk_tokens``,
``overlap`` and one or more ``files`` (parsed like an ingest would: PDF, DOCX, HTML, markdown…).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ...search.highlights import HighlightDocument
from ...types import Section, Source
from ..errors import APIError, body_validation_error
from ..jobs import safe_name
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import HighlightsRequest
from ..state import ServiceState
from ._common import service

router = APIRouter()


def _chunk_options(body: HighlightsRequest) -> Any:
    if body.chunking is None:
        return None
    from ...chunking import ChunkOptions

    return ChunkOptions(
        splitter=body.chunking.splitter,
        chunk_tokens=body.chunking.chunk_tokens,
        overlap=body.chunking.overlap,
    )


def _parse_files(files: list[tuple[str, bytes]]) -> list[HighlightDocument]:
    """Parse uploads (in a worker thread) in a private temporary folder removed afterwards."""
    from ...parsers import ParseOptions, parse

    folder = Path(tempfile.mkdtemp(prefix="vectorstream-highlights-"))
    try:
        docs = []
        for i, (name, data) in enumerate(files):
            clean = safe_name(name, i)
            path = folder / f"{i}-{clean}"
            path.write_bytes(data)
            sections: list[Section] = [
                s
                for s in parse(Source(uri=clean, path=str(path), size=len(data)), ParseOptions())
                if s.text
            ]
            docs.append(HighlightDocument(name or clean, tuple(sections)))
        return docs
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(
    state: ServiceState, body: HighlightsRequest, docs: list[HighlightDocument]
) -> list[dict[str, Any]]:
    results = state.highlighter.highlight(
        body.query,
        docs,
        k_per_document=body.k_per_document,
        max_characters=body.max_characters,
        options=_chunk_options(body),
    )
    cache = state.highlighter.cache
    hits = sum(1 for r in results if r.cached)
    state.metrics.cache_hits.inc(hits)
    state.metrics.cache_misses.inc(len(results) - hits)
    state.metrics.cache_bytes.set(cache.bytes)
    return [r.to_dict() for r in results]


async def _multipart(request: Request) -> tuple[HighlightsRequest, list[tuple[str, bytes]]]:
    form = await request.form()
    files: list[tuple[str, bytes]] = []
    for value in form.getlist("files") + form.getlist("file"):
        if isinstance(value, UploadFile):
            files.append((value.filename or "upload", await value.read()))
    if not files:
        raise APIError(400, "send one or more files in the 'files' field", param="files")
    fields: dict[str, Any] = {
        "query": form.get("query"),
        "documents": [{"text": ""}],  # replaced by the parsed files below
    }
    for name in ("k_per_document", "max_characters"):
        if form.get(name) not in (None, ""):
            fields[name] = form.get(name)
    chunking = {
        n: form.get(n)
        for n in ("splitter", "chunk_tokens", "overlap")
        if form.get(n) not in (None, "")
    }
    if chunking:
        fields["chunking"] = chunking
    try:
        body = HighlightsRequest.model_validate(fields)
    except ValidationError as exc:
        raise body_validation_error(exc) from exc
    return body, files


@router.post("/v1/highlights")
async def highlights(request: Request) -> JSONResponse:
    state = service(request)
    if state.kind in ("sparse", "multivector"):
        # The engine scores chunks by the cosine of dense vectors.
        raise APIError(
            400,
            f"highlights need a dense text model; {state.model.model_id!r} makes {state.kind} "
            "embeddings",
            code="unsupported_model_kind",
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        body, files = await _multipart(request)
        if len(files) > state.settings.max_documents:
            raise APIError(
                400, f"at most {state.settings.max_documents} files per request", param="files"
            )
        docs = await anyio.to_thread.run_sync(_parse_files, files)
    else:
        try:
            body = HighlightsRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise body_validation_error(exc) from exc
        if len(body.documents) > state.settings.max_documents:
            raise APIError(
                400,
                f"{len(body.documents)} documents, more than the limit of {state.settings.max_documents}",
                param="documents",
            )
        docs = [
            HighlightDocument.from_text(d.id or str(i), d.text)
            for i, d in enumerate(body.documents)
        ]
    limit = state.settings.max_document_chars
    for i, doc in enumerate(docs):
        size = sum(len(s.text) for s in doc.sections)
        if size > limit:
            raise APIError(
                400,
                f"document {i} has {size} characters, more than the limit of {limit}",
                param="documents",
            )
    data = await anyio.to_thread.run_sync(_run, state, body, docs)
    return JSONResponse({"object": "list", "query": body.query, "data": data})
