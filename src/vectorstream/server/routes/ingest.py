"""``POST /v1/ingest`` (multipart files or JSON texts) → a job; ``GET /v1/jobs/{id}`` → its state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ..errors import APIError, body_validation_error
from ..jobs import TextItem, Upload
from ..responses import FastJSONResponse as JSONResponse
from ..schemas import IngestRequest
from ._common import service

router = APIRouter()


@router.post("/v1/ingest", status_code=202)
async def ingest(request: Request) -> JSONResponse:
    state = service(request)
    content_type = request.headers.get("content-type", "")
    uploads: list[Upload] = []
    texts: list[TextItem] = []
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        for value in form.getlist("files") + form.getlist("file"):
            if isinstance(value, UploadFile):
                uploads.append(Upload(value.filename or "upload", await value.read()))
        collection = form.get("collection")
        if collection is not None and not isinstance(collection, str):
            raise APIError(400, "collection must be a text field", param="collection")
        if not uploads:
            raise APIError(400, "send one or more files in the 'files' field", param="files")
    else:
        try:
            body = IngestRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise body_validation_error(exc) from exc
        texts = [TextItem(t.id or "", t.text, dict(t.metadata or {})) for t in body.texts]
        collection = body.collection
    if len(uploads) + len(texts) > state.settings.max_inputs:
        raise APIError(
            400, f"at most {state.settings.max_inputs} files or texts per job", param="files"
        )
    job = state.jobs.submit(
        collection or state.settings.collection or "documents", uploads=uploads, texts=texts
    )
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("/v1/jobs/{job_id}")
async def job(job_id: str, request: Request) -> JSONResponse:
    state = service(request)
    found = state.jobs.get(job_id)
    if found is None:
        raise APIError(404, f"no job {job_id!r}", param="job_id", code="job_not_found")
    return JSONResponse(found)
