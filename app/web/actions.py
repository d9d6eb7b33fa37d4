"""The dashboard's form posts: sign in and out, fork the sample, upload an archive."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.auth.service import user_for_token
from app.config import get_settings
from app.db import SessionDep
from app.errors import AppError, Forbidden
from app.models import Repository, User
from app.repos import service as repos
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
    user = user_for_token(db, token) if token else None
    if user is None:
        message = ("Enter your API token." if not token else
                   "That token is not valid. Check for missing characters, or ask an admin "
                   "for a new one.")
        return render(request, "login.html", {"next": target, "error": message},
                      status=422 if not token else 401)
    db.commit()
    sign_in(request, user)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the browser session."""
    async with request.form(max_files=0, max_fields=2) as form:
        supplied = form.get(CSRF_FORM_FIELD)
    try:
        check_form_csrf(request, supplied)
    except Forbidden:
        return RedirectResponse("/", status_code=303)
    sign_out(request)
    return RedirectResponse("/login", status_code=303)


def _repos_page_with_error(request: Request, db: Session, user: User, *, form: str,
                           name: str, exc: AppError) -> Response:
    """Undo the failed action and show the repositories page with the error at `form`."""
    db.rollback()
    if isinstance(exc, Forbidden):  # creating in one's own namespace: only the CSRF check refuses
        exc = Forbidden(EXPIRED)
    rows = [repos.to_public(db, r) for r in repos.list_repos(db, user=user)]
    return render(request, "repos.html", {"repos": rows, "values": {form: name},
                                          "errors": {form: exc.detail}},
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
        repo = await run_in_threadpool(_fork, db, user, name)
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
            repo = await run_in_threadpool(_from_archive, db, user, name, archive)
        finally:
            discard_upload(archive)
    except AppError as exc:
        return _repos_page_with_error(request, db, user, form="upload", name=name, exc=exc)
    flash(request, f"Created {repo.full_name} from the archive.")
    return RedirectResponse(f"/repos/{repo.full_name}", status_code=303)


def _fork(db: Session, user: User, name: str) -> Repository:
    repo = repos.fork_template(db, owner=user, name=name, template="resnet50")
    repos.commit_new_repo(db, repo)
    return repo


def _from_archive(db: Session, user: User, name: str, archive: Path) -> Repository:
    repo = repos.create_from_archive(db, owner=user, name=name, archive=archive)
    repos.commit_new_repo(db, repo)
    return repo
