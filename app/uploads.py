"""Receiving uploaded files: streamed to the data dir's scratch space under a size cap."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from app import storage
from app.errors import Invalid, TooLarge, invalid_input

CHUNK = 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
MAX_BODY_KEY = "x-max-body-bytes"
_M = TypeVar("_M", bound=BaseModel)


def body_limit(max_bytes: int) -> dict[str, Any]:
    """The `openapi_extra` of a `CappedRoute` whose whole body is at most `max_bytes`."""
    return {MAX_BODY_KEY: max_bytes}


def _too_large(limit: int) -> HTTPException:
    # An HTTPException passes through FastAPI's body parsing (any other error there becomes
    # a 400); the one error handler renders it as a 413 `too_large`.
    return HTTPException(413, detail=f"body: the request is larger than the limit of {limit} "
                                     "bytes of this endpoint")


class CappedRoute(APIRoute):
    """A route whose body is refused with a 413 past its `body_limit`: at once when the
    declared Content-Length is over, else as soon as the bytes received pass it, before the
    body (JSON or multipart, parsed by FastAPI from the declared parameters) is complete."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, behind the body cap when it has one."""
        handler = super().get_route_handler()
        limit = (self.openapi_extra or {}).get(MAX_BODY_KEY)
        if not isinstance(limit, int):
            return handler

        async def capped(request: Request) -> Response:
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise _too_large(limit)
            received = 0
            receive = request.receive

            async def counted() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
                return message

            return await handler(Request(request.scope, counted, request._send))

        return capped


def validated(model: type[_M], data: Any) -> _M:
    """`data` validated as `model` (the bodies a route parses itself): 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc.errors()) from None


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


def form_values(form: FormData) -> dict[str, Any]:
    """A form's fields for a model (an empty text field counts as absent, as in FastAPI)."""
    return {key: value for key, value in form.multi_items() if value != ""}


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
