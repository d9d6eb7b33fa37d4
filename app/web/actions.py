"""The dashboard's form posts: sign in and out, fork the sample, upload an archive."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.auth.deps import client_address
from app.auth.ratelimit import get_failure_limiter
from app.auth.service import find_token
from app.config import get_settings
from app.db import SessionDep, transaction
from app.errors import AppError, Forbidden, TooManyRequests
from app.models import User
from app.repos import service as repos
from app.repos import writes as repos_writes
from app.uploads import discard_upload, form_file, form_text, save_upload
from app.web.rendering import render
from app.web.router import login_redirect, safe_next
from app.web.session import (
    CSRF_FORM_FIELD,
    check_form_csrf,
    flash,
    session_user,
    sign_in,
    sign_out,
)

router = APIRouter(include_in_schema=False)

EXPIRED = "Your session expired or the page was stale: please try again."


def _text(form: FormData, field: str) -> str:
    value = form.get(field)
    return value.strip() if isinstance(value, str) else ""


@router.post("/login")
async def login(request: Request, db: SessionDep) -> Response:
    """Check an API token and start a browser session for its user."""
    async with request.form(max_files=0, max_fields=5) as form:
        token, target = _text(form, "token"), safe_next(_text(form, "next") or "/")
        supplied = form.get(CSRF_FORM_FIELD)
    try:
        check_form_csrf(request, supplied)
    except Forbidden:
        return render(request, "login.html", {"next": target, "error": EXPIRED}, status=403)
    limiter, client = get_failure_limiter(), client_address(request)
    try:
        await run_in_threadpool(limiter.check, client)
    except TooManyRequests as exc:
        page = render(request, "login.html", {"next": target, "error": exc.detail}, status=429)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    if token:
        signed_in: bool = await run_in_threadpool(_sign_in_with, request, db, token)
        if signed_in:
            return RedirectResponse(target, status_code=303)
        await run_in_threadpool(limiter.record_failure, client, what="failed sign-in")
    message = ("Enter your API token." if not token else
               "That token is not valid. Check for missing characters, or ask an admin "
               "for a new one.")
    return render(request, "login.html", {"next": target, "error": message},
                  status=422 if not token else 401)


def _sign_in_with(request: Request, db: Session, token: str) -> bool:
    """Start a session for the owner of `token` (False when no user has it)."""
    with transaction(db):
        row = find_token(db, token)
        if row is not None:
            sign_in(request, db, user=row.user, token=row)
    return row is not None


def _sign_out(request: Request, db: Session) -> None:
    with transaction(db):
        sign_out(request, db)


@router.post("/logout")
async def logout(request: Request, db: SessionDep) -> Response:
    """End the browser session."""
    async with request.form(max_files=0, max_fields=2) as form:
        supplied = form.get(CSRF_FORM_FIELD)
    try:
        check_form_csrf(request, supplied)
    except Forbidden:
        return RedirectResponse("/", status_code=303)
    await run_in_threadpool(_sign_out, request, db)
    return RedirectResponse("/login", status_code=303)


def _repos_page_with_error(request: Request, db: Session, user: User, *, form: str,
                           name: str, exc: AppError) -> Response:
    """Show the repositories page with the error of the failed action (rolled back) at `form`."""
    if isinstance(exc, Forbidden):  # creating in one's own namespace: only the CSRF check refuses
        exc = Forbidden(EXPIRED)
    rows = [repos.to_public(db, r) for r in repos.list_repos(db, user=user)]
    # Put the message under the input it is about: the archive, or else the name.
    about = {str(f.get("field")) for f in exc.fields or []}
    field = "archive" if "archive" in about or exc.detail.startswith("archive") else "name"
    return render(request, "repos.html", {"repos": rows, "values": {form: name},
                                          "errors": {form: exc.detail, "field": field}},
                  user=user, status=exc.status)


@router.post("/repos/fork")
async def fork_sample(request: Request, db: SessionDep) -> Response:
    """Fork the ResNet50 sample into the user's namespace."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    async with request.form(max_files=0, max_fields=3) as form:
        name, supplied = _text(form, "name"), form.get(CSRF_FORM_FIELD)
    try:
        check_form_csrf(request, supplied)
        repo = await run_in_threadpool(repos_writes.fork, db, user, name=name,
                                       template="resnet50")
    except AppError as exc:
        return _repos_page_with_error(request, db, user, form="fork", name=name, exc=exc)
    flash(request, f"Forked the ResNet50 sample into {repo.full_name}.")
    return RedirectResponse(f"/repos/{repo.full_name}", status_code=303)


@router.post("/repos/upload")
async def upload_repository(request: Request, db: SessionDep) -> Response:
    """Create a repository from an uploaded .zip or .tar.gz."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    name = ""
    try:
        async with request.form(max_files=1, max_fields=3) as form:
            name = _text(form, "name")
            check_form_csrf(request, form.get(CSRF_FORM_FIELD))
            name = form_text(form, "name")
            archive = await save_upload(form_file(form, "archive"),
                                        max_bytes=get_settings().max_repo_bytes,
                                        field="archive")
        try:
            repo, stripped = await run_in_threadpool(repos_writes.from_archive, db, user,
                                                         name=name, archive=archive)
        finally:
            await run_in_threadpool(discard_upload, archive)
    except AppError as exc:
        return _repos_page_with_error(request, db, user, form="upload", name=name, exc=exc)
    note = (f" Its files all sat in one folder, {stripped}/, which was left out: the "
            "repository holds that folder's contents." if stripped else "")
    flash(request, f"Created {repo.full_name} from the archive.{note}")
    return RedirectResponse(f"/repos/{repo.full_name}", status_code=303)
