"""Receiving uploaded files: streamed to the data dir's scratch space under a size cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from app import storage
from app.errors import Invalid, TooLarge

CHUNK = 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024


async def save_upload(upload: UploadFile, *, max_bytes: int, field: str) -> Path:
    """Copy an upload to a temporary file, refusing it past `max_bytes`; the caller deletes it."""
    return await run_in_threadpool(_save_file, upload.file, upload.filename, max_bytes=max_bytes,
                                   field=field)


def _save_file(src: BinaryIO, filename: str | None, *, max_bytes: int, field: str) -> Path:
    # Runs in a worker thread: a 200 MB copy must not hold up the event loop.
    path = storage.staging_dir("upload-") / Path(filename or "upload").name
    size = 0
    try:
        src.seek(0)
        with path.open("wb") as out:
            while chunk := src.read(CHUNK):
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


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The raw request body, refused with a 413 as soon as it passes `max_bytes`."""
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise TooLarge(f"body: the request body is limited to {max_bytes} bytes",
                           fields=[{"field": "body", "message": f"at most {max_bytes} bytes"}])
    return bytes(raw)


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON: 422 naming the position when it is not UTF-8 JSON."""
    raw = await read_body(request, max_bytes=MAX_JSON_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"body is not UTF-8 text (bad byte at offset {exc.start})",
                      fields=[{"field": "body", "message": "not UTF-8"}]) from None
    try:
        return json.loads(text or "null")
    except json.JSONDecodeError as exc:
        raise Invalid(f"body is not valid JSON: line {exc.lineno}, column {exc.colno}: "
                      f"{exc.msg}", fields=[{"field": "body", "message": exc.msg}]) from exc
    except RecursionError:
        raise Invalid("body is nested too deeply", fields=[{"field": "body",
                                                            "message": "nested too deeply"}]
                      ) from None
