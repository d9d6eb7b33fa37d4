"""The reverse proxy in front of the Aim UIs: `/trainings/{id}/aim/` and `/repos/{o}/{n}/aim/`.

Every request is authenticated like the API (Bearer token or the browser session; unsafe
methods of a session must come from this origin), checked against the training's or
repository's readers, counts as use of the report, and is streamed to the Aim process.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from app.auth.deps import UNSAFE_METHODS, bearer_user, browser_user
from app.db import get_sessionmaker
from app.errors import AppError, Forbidden, NotFound, Unauthorized
from app.evaluations import service
from app.evaluations.manager import AIM_ORIGIN, EvaluationFailed, get_manager
from app.evaluations.offline import CONTENT_SECURITY_POLICY, offline_page
from app.evaluations.sources import Subject, repo_subject, training_subject
from app.models import Evaluation, Repository, Training, User
from app.params import TrainingId

router = APIRouter(include_in_schema=False)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade"})
# Trainyard's credentials stay here; Aim gets neither the token nor the session cookie.
DROP_REQUEST = HOP_BY_HOP | {"host", "authorization", "cookie", "x-csrf-token"}
DROP_RESPONSE = HOP_BY_HOP | {"set-cookie", "server", "date"}
STATIC_CACHE = "private, max-age=86400"

Lookup = Callable[[Session, User], tuple[Subject, Evaluation | None]]


def _caller(db: Session, request: Request) -> User | None:
    user = bearer_user(request, db)
    if user is not None:
        return user
    user = browser_user(request, db)
    if user is None:
        return None
    # Aim's scripts cannot send Trainyard's CSRF token: a session's unsafe request must come
    # from this origin instead (browsers always send Origin with those).
    if request.method in UNSAFE_METHODS:
        origin = urlsplit(request.headers.get("origin", ""))
        if origin.netloc != request.headers.get("host"):
            raise Forbidden("cross-origin request refused", code="csrf_failed")
    return user


def _is_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _error_page(exc: AppError, back: str) -> HTMLResponse:
    body = (f"<!doctype html><meta charset='utf-8'><title>Evaluation</title>"
            f"<h1>Evaluation</h1><p>{html.escape(exc.detail)}</p>"
            f"<p><a href='{html.escape(back)}'>Back</a></p>")
    return HTMLResponse(body, status_code=exc.status)


def _upstream_headers(request: Request, *, page: bool) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROP_REQUEST]
    if page:  # the page is rewritten, so ask for it uncompressed
        headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
        headers.append(("accept-encoding", "identity"))
    client = request.client.host if request.client else ""
    headers += [("x-forwarded-for", client), ("x-forwarded-proto", request.url.scheme),
                ("x-forwarded-host", request.headers.get("host", ""))]
    return headers


def _response_headers(upstream: httpx.Response, *, path: str) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROP_RESPONSE}
    location = headers.get("location")
    if location is not None and location.startswith(AIM_ORIGIN):
        headers["location"] = location[len(AIM_ORIGIN):] or "/"
    if path.startswith("static-files/") and upstream.status_code == 200:
        headers["cache-control"] = STATIC_CACHE
    return headers


async def _forward(request: Request, *, socket: str, path: str) -> Response:
    client = get_manager().http(socket)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    target = f"{AIM_ORIGIN}{raw_path.decode('latin-1')}"
    if request.url.query:
        target += f"?{request.url.query}"
    is_page = request.method == "GET" and not path.startswith(("api/", "static-files/")) \
        and path != "api"
    body = None if request.method in ("GET", "HEAD", "OPTIONS") else request.stream()
    upstream = await client.send(
        client.build_request(request.method, target, content=body,
                             headers=_upstream_headers(request, page=is_page)), stream=True)
    headers = _response_headers(upstream, path=path)
    if is_page and upstream.headers.get("content-type", "").startswith("text/html"):
        text = (await upstream.aread()).decode("utf-8", errors="replace")
        await upstream.aclose()
        headers.pop("content-length", None)
        headers["content-security-policy"] = CONTENT_SECURITY_POLICY
        headers["cache-control"] = "no-store"
        return HTMLResponse(offline_page(text), status_code=upstream.status_code,
                            headers=headers)
    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                             headers=headers, background=BackgroundTask(upstream.aclose))


async def _proxy(request: Request, path: str, lookup: Lookup, back: str) -> Response:
    def authorize() -> tuple[Subject, Evaluation | None] | None:
        with get_sessionmaker()() as db:
            user = _caller(db, request)
            return None if user is None else lookup(db, user)

    try:
        found = await run_in_threadpool(authorize)
        if found is None:
            if _is_page(request):
                # The query (Aim's ?select=...) is the report's state: it must survive.
                query = request.url.query
                target = quote(request.url.path + (f"?{query}" if query else ""), safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            raise Unauthorized("sign in or send 'Authorization: Bearer <token>'")
        subject, row = found
        if row is None:
            raise NotFound("this report is not started: start the evaluation first",
                           code="no_evaluation")
        manager = get_manager()
        socket = await manager.serving_socket(subject, row)
        await manager.touch(subject, row)
        try:
            return await _forward(request, socket=socket, path=path)
        except httpx.ConnectError:
            if request.method not in ("GET", "HEAD"):
                raise EvaluationFailed("Aim's UI went away: try again") from None
            # The process ended since it was last seen: start it again and retry once.
            manager.forget(subject)
            fresh = await run_in_threadpool(_fresh_row, subject)
            if fresh is None:
                raise NotFound("this report is not started", code="no_evaluation") from None
            socket = await manager.serving_socket(subject, fresh)
            return await _forward(request, socket=socket, path=path)
    except AppError as exc:
        if _is_page(request):
            return _error_page(exc, back)
        raise


def _fresh_row(subject: Subject) -> Evaluation | None:
    with get_sessionmaker()() as db:
        return service.get_row(db, subject)


def _training_lookup(training_id: int) -> Lookup:
    def lookup(db: Session, user: User) -> tuple[Subject, Evaluation | None]:
        training = db.get(Training, training_id)
        service.require_readable_repo(training.repo if training else None, user,
                                      f"training {training_id}")
        subject = training_subject(training_id)
        return subject, service.get_row(db, subject)
    return lookup


def _repo_lookup(owner: str, name: str) -> Lookup:
    def lookup(db: Session, user: User) -> tuple[Subject, Evaluation | None]:
        repo = db.scalar(select(Repository).join(User, Repository.owner_id == User.id)
                         .where(User.username == owner, Repository.name == name))
        repo = service.require_readable_repo(repo, user, f"repository '{owner}/{name}'")
        subject = repo_subject(repo)
        return subject, service.get_row(db, subject)
    return lookup


@router.get("/trainings/{training_id}/aim")
async def training_report_root(training_id: TrainingId) -> RedirectResponse:
    """The report lives under the trailing slash."""
    return RedirectResponse(f"/trainings/{training_id}/aim/", status_code=307)


@router.api_route("/trainings/{training_id}/aim/{path:path}", methods=METHODS)
async def training_report(training_id: TrainingId, path: str, request: Request) -> Response:
    """Aim's UI of a training's evaluation, behind Trainyard's login."""
    return await _proxy(request, path, _training_lookup(training_id),
                        back=f"/trainings/{training_id}")


@router.get("/repos/{owner}/{name}/aim")
async def repo_report_root(owner: str, name: str) -> RedirectResponse:
    """The comparison lives under the trailing slash."""
    return RedirectResponse(f"/repos/{owner}/{name}/aim/", status_code=307)


@router.api_route("/repos/{owner}/{name}/aim/{path:path}", methods=METHODS)
async def repo_report(owner: str, name: str, path: str, request: Request) -> Response:
    """Aim's UI comparing a repository's trainings, behind Trainyard's login."""
    return await _proxy(request, path, _repo_lookup(owner, name), back=f"/repos/{owner}/{name}")
