"""Receiving uploaded files: streamed to the data dir's scratch space under a size cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from app import storage
from app.errors import Invalid, TooLarge

CHUNK = 1024 * 1024


async def save_upload(upload: UploadFile, *, max_bytes: int, field: str) -> Path:
    """Copy an upload to a temporary file, refusing it past `max_bytes`; the caller deletes it."""
    path = storage.staging_dir("upload-") / Path(upload.filename or "upload").name
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"{field}: the upload is larger than the limit of "
                                   f"{max_bytes} bytes")
                out.write(chunk)
    except BaseException:
        storage.remove_tree(path.parent)
        raise
    if size == 0:
        storage.remove_tree(path.parent)
        raise Invalid(f"{field}: the uploaded file is empty",
                      fields=[{"field": field, "message": "empty file"}])
    return path


def discard_upload(path: Path) -> None:
    """Remove a file saved by `save_upload` (and its staging folder)."""
    storage.remove_tree(path.parent)


def form_text(form: FormData, field: str) -> str:
    """A required text field of a multipart form."""
    value = form.get(field)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{field}: required form field", fields=[{"field": field,
                                                               "message": "required"}])
    return value.strip()


def form_file(form: FormData, field: str) -> UploadFile:
    """A required file field of a multipart form."""
    value = form.get(field)
    if not isinstance(value, UploadFile):
        raise Invalid(f"{field}: required file field", fields=[{"field": field,
                                                               "message": "required file"}])
    return value


def is_multipart(request: Request) -> bool:
    """True for a multipart/form-data request."""
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON (422 naming the position when it is not JSON)."""
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise Invalid(f"body is not valid JSON: line {exc.lineno}, column {exc.colno}: "
                      f"{exc.msg}", fields=[{"field": "body", "message": exc.msg}]) from exc
