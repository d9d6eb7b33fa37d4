"""Business errors: one exception class with a status and code, rendered by one handler."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import is_database_busy


class AppError(Exception):
    """An error a user can act on: `{"error": code, "detail": message}` with `status`."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None,
                 fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.fields = fields

    def response_headers(self) -> dict[str, str] | None:
        """Headers the error response carries (a 401's challenge, a 429's Retry-After)."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else None

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        out: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.fields:
            out["fields"] = self.fields
        return out


class NotFound(AppError):
    status = 404
    code = "not_found"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Invalid(AppError):
    """A 422 whose `fields` list names each offending field path."""

    status = 422
    code = "invalid"


class TooLarge(AppError):
    status = 413
    code = "too_large"


class TooManyRequests(AppError):
    """A 429 that tells the client when to try again (`Retry-After`, in seconds)."""

    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Busy(AppError):
    """A 503 with Retry-After: the database could not take the request now; nothing changed."""

    status = 503
    code = "busy"
    retry_after_s = 2

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def field_path(loc: Iterable[str | int], *, root: str = "body") -> str:
    """A pydantic error location as a field path: `inputs[1].input_url`; `root` when empty."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or root


def validation_fields(errors: Iterable[Mapping[str, Any]], *, root: str = "body",
                      message: Callable[[Mapping[str, Any]], str] | None = None
                      ) -> list[dict[str, Any]]:
    """The one mapping of pydantic validation errors to the 422's `fields`: each error's field
    path and message (`message(error)` when given, else pydantic's own)."""
    return [{"field": field_path(err.get("loc", ()), root=root),
             "message": message(err) if message else str(err.get("msg", "invalid"))}
            for err in errors]


def invalid_input(errors: Iterable[Mapping[str, Any]]) -> Invalid:
    """The 422 for pydantic validation errors of a request's body (or query), naming every
    field; FastAPI's leading `body` is left out of the paths (`name`, not `body.name`), and
    JSON that does not parse is about the `body`."""
    fields = validation_fields({**err, "loc": _without_body(err.get("loc", ()))}
                               if err.get("type") != "json_invalid" else {**err, "loc": ()}
                               for err in errors)
    return Invalid("; ".join(f"{f['field']}: {f['message']}" for f in fields), fields=fields)


def _without_body(loc: Iterable[str | int]) -> tuple[str | int, ...]:
    parts = tuple(loc)
    return parts[1:] if parts[:1] == ("body",) else parts


_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid"}


def _http_error_body(exc: StarletteHTTPException) -> tuple[int, dict[str, Any]]:
    # Starlette and FastAPI raise 400 for a body they cannot parse (bad JSON, a malformed or
    # oversized multipart form): for Trainyard that is invalid input about the body, a 422.
    if exc.status_code == 400:
        detail = f"body: {exc.detail}"
        return 422, {"error": "invalid", "detail": detail,
                     "fields": [{"field": "body", "message": str(exc.detail)}]}
    code = _HTTP_CODES.get(exc.status_code, "error")
    return exc.status_code, {"error": code, "detail": str(exc.detail)}


def install_error_handlers(app: FastAPI) -> None:
    """Render AppError and request validation errors in the one error shape."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status,
                            headers=exc.response_headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, body = _http_error_body(exc)
        return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the validation let through (PostgreSQL: a NUL byte in
        # text, a number out of range): the input is invalid, not the server broken.
        why = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid value"
        return JSONResponse({"error": "invalid", "detail": f"a value cannot be stored: {why}",
                             "fields": [{"field": "body", "message": why}]}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_database_busy(exc):
            raise exc  # a real bug: the server error middleware logs it and answers 500
        busy = Busy("the database is busy with other writes; nothing was changed, retry "
                    f"in {Busy.retry_after_s} s")
        return await _app_error(request, busy)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _app_error(request, invalid_input(exc.errors()))
