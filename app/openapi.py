"""The OpenAPI document: every error documented as the one shape `app.errors` renders.

FastAPI documents a 422 `HTTPValidationError` that Trainyard never sends. Here, once for every
route, the error responses a route can really give are documented with the `Error` schema:
401/403/409/429 for routes that need a caller (429: too many failed authentications from
the client's address), 404 for routes with path parameters, 413 for routes with a body, 422
for routes that take input, and 503 for all (the database busy: nothing changed, retry).
Routes declare nothing by hand. A route that accepts the bodies of other routes (the first
API's `POST /api/v1/repos`, JSON or multipart) names them with `bodies_of(...)`, and gets their
generated request bodies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.auth.deps import optional_user

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error", "type": "object", "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. not_found, invalid, "
                  "training_limit."},
        "detail": {"type": "string", "description": "What was wrong and what to do."},
        "fields": {"type": "array", "description": "Each offending field (422).",
                   "items": {"type": "object", "required": ["field", "message"],
                             "properties": {"field": {"type": "string"},
                                            "message": {"type": "string"}}}},
    },
}
DESCRIPTIONS = {401: "Missing or invalid API token", 403: "Not allowed for this caller",
                404: "No such resource (or not visible to the caller)",
                409: "Conflicts with the current state", 413: "Over a size limit",
                422: "Invalid input; `fields` names each offending field",
                429: "Too many failed authentications from this address; see Retry-After",
                503: "The database is busy with other writes; nothing changed, see Retry-After"}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
_BODIES_OF = "x-bodies-of"


def bodies_of(*paths: str) -> dict[str, Any]:
    """The `openapi_extra` of a POST route that takes the request body of each route at `paths`
    (POST routes too): its documented body is theirs, one content type each."""
    return {_BODIES_OF: list(paths)}


def _needs_caller(dependant: Dependant) -> bool:
    return any(dep.call is optional_user or _needs_caller(dep)
               for dep in dependant.dependencies)


def _takes_input(route: APIRoute) -> bool:
    return bool(route.dependant.path_params or route.dependant.query_params
                or route.dependant.body_params or route.openapi_extra
                or (route.methods or set()) & {"POST", "PUT", "PATCH"})


def error_statuses(route: APIRoute) -> list[int]:
    """The error statuses a route can answer with."""
    caller = _needs_caller(route.dependant)
    statuses = [401, 403] if caller else []
    if route.dependant.path_params:
        statuses.append(404)
    if caller:
        statuses.append(409)
    if (route.methods or set()) & {"POST", "PUT", "PATCH"}:
        statuses.append(413)
    if _takes_input(route):
        statuses.append(422)
    if caller:
        statuses.append(429)
    statuses.append(503)
    return statuses


def build_openapi(app: FastAPI, routers: Sequence[APIRouter]) -> dict[str, Any]:
    """The application's OpenAPI document with the real error model (`routers`: those the app
    includes without a further prefix)."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _merge_bodies(schema["paths"])
    known = {(route.path_format, method.lower()): error_statuses(route)
             for route in _api_routes([*app.routes, *(r for rt in routers for r in rt.routes)])
             for method in route.methods or ()}
    for path, path_item in schema["paths"].items():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in known.get((path, method), sorted(DESCRIPTIONS)):
                responses[str(status)] = {"description": DESCRIPTIONS[status], "content": {
                    "application/json": {"schema": ERROR_REF}}}
    return schema


def _merge_bodies(paths: dict[str, Any]) -> None:
    for path_item in paths.values():
        for operation in path_item.values():
            sources = operation.pop(_BODIES_OF, None)
            if not sources:
                continue
            content: dict[str, Any] = {}
            for source in sources:
                content.update(paths[source]["post"]["requestBody"]["content"])
            operation["requestBody"] = {"required": True, "content": content}


def _api_routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # a router included in a router (no prefix)
            yield from _api_routes(route.original_router.routes)


def install_openapi(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Serve `build_openapi` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, routers)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
