"""The dashboard's pages, rendered from the same services as the REST API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.db import SessionDep
from app.errors import AppError
from app.headers import TEXT_PLAIN, USER_CONTENT_HEADERS
from app.models import Evaluation, Repository, Training, User
from app.params import TrainingId
from app.repos import service as repos
from app.repos.schemas import RepoDetail, RepoFile, RepoPublic
from app.trainings import outputs
from app.trainings import service as trainings
from app.web.rendering import render
from app.web.session import session_user
from app.web.views import config_files, creation_block, form_defaults
from app.workers import service as workers

router = APIRouter(include_in_schema=False)


def login_redirect(request: Request) -> RedirectResponse:
    """Send an anonymous visitor to the sign-in page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def error_page(request: Request, user: User | None, exc: AppError) -> Response:
    """An HTML page for a business error (404 of a repository, ...)."""
    return render(request, "error.html", {"error": exc}, user=user, status=exc.status)


def _repo_for_page(request: Request, db: Session, *, owner: str,
                   name: str) -> tuple[User, Repository] | Response:
    """The signed-in user and the repository, or the sign-in redirect or error page."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    try:
        return user, repos.get_repo(db, owner=owner, name=name, user=user)
    except AppError as exc:
        return error_page(request, user, exc)


def _repo_context(db: Session, repo: Repository) -> dict[str, Any]:
    """What every repository page shows: the repository, the training limit, and what
    (if anything) blocks creating a training now."""
    detail = repos.to_public(db, repo, detail=True)
    limit = get_settings().max_trainings_per_repo
    return {"repo": detail, "limit": limit, "block": creation_block(detail, limit=limit)}


def _training_for_page(request: Request, db: Session,
                       training_id: int) -> tuple[User, Training] | Response:
    """The signed-in user and the training, or the sign-in redirect or error page."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    try:
        return user, trainings.get_training(db, training_id, user=user)
    except AppError as exc:
        return error_page(request, user, exc)


@router.get("/")
def repositories_page(request: Request, db: SessionDep) -> Response:
    """My repositories, with forms to fork the sample and to upload an archive."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    rows = [repos.to_public(db, r) for r in repos.list_repos(db, user=user)]
    return render(request, "repos.html", {"repos": rows, "values": {}, "errors": {}},
                  user=user)


@router.get("/login")
def login_page(request: Request, db: SessionDep, next: str = "/") -> Response:
    """The sign-in form (API token)."""
    user = session_user(request, db)
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "error": None})


def _files(repo: RepoPublic) -> list[RepoFile]:
    return repo.files if isinstance(repo, RepoDetail) else []


def safe_next(target: str) -> str:
    """A same-site path to go to after signing in (anything else becomes `/`)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/repos/{owner}/{name}")
def repository_page(owner: str, name: str, request: Request, db: SessionDep) -> Response:
    """A repository: its trainings (live) and its files."""
    found = _repo_for_page(request, db, owner=owner, name=name)
    if isinstance(found, Response):
        return found
    user, repo = found
    context = _repo_context(db, repo)
    return render(request, "repo.html", {
        **context, "trainings": trainings.list_trainings(db, repo),
        "files": _files(context["repo"]),
    }, user=user)


@router.get("/repos/{owner}/{name}/trainings/new")
def new_training_page(owner: str, name: str, request: Request, db: SessionDep) -> Response:
    """Create a training: load a config file of the repository, or fill the form."""
    found = _repo_for_page(request, db, owner=owner, name=name)
    if isinstance(found, Response):
        return found
    user, repo = found
    context = _repo_context(db, repo)
    return render(request, "training_new.html", {
        **context, "config_files": config_files(_files(context["repo"])),
        "defaults": form_defaults(),
    }, user=user)


@router.get("/trainings/{training_id}")
def training_page(training_id: TrainingId, request: Request, db: SessionDep) -> Response:
    """A training: status, times, config, live log, outputs, terminate and delete."""
    found = _training_for_page(request, db, training_id)
    if isinstance(found, Response):
        return found
    user, training = found
    return render(request, "training.html", {
        "training": training, "repo": training.repo, "waiting": workers.waiting(db, training),
        "outputs": outputs.list_outputs(training),
        "limit": get_settings().max_trainings_per_repo,
        "output_dirs": [(n, str(d)) for n, d in outputs.output_dirs(training)],
        "has_evaluation": db.scalar(select(Evaluation.id).where(
            Evaluation.training_id == training.id)) is not None,
    }, user=user)


@router.get("/workers")
def workers_page(request: Request, db: SessionDep) -> Response:
    """Queues and online workers per instance type; every worker for admins."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    return render(request, "workers.html",
                  {"overview": workers.overview(db, detailed=user.is_admin)}, user=user)


@router.get("/trainings/{training_id}/log.txt", response_model=None)
def download_log(training_id: TrainingId, request: Request, db: SessionDep) -> Response:
    """The whole log of a training as a file download."""
    found = _training_for_page(request, db, training_id)
    if isinstance(found, Response):
        return found
    _user, training = found
    path = storage.training_log(training.id)
    if not path.exists():
        return Response(b"", media_type=TEXT_PLAIN, headers=USER_CONTENT_HEADERS)
    return FileResponse(path, media_type=TEXT_PLAIN, headers=USER_CONTENT_HEADERS,
                        filename=f"{training.job_name}-{training.id}.log")
