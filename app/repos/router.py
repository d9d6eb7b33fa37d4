"""Repositories over REST."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.auth.deps import CurrentUser
from app.config import get_settings
from app.db import Cleanup, SessionDep, transaction
from app.errors import TooLarge
from app.evaluations.manager import stop_detached_evaluations
from app.evaluations.sources import repo_subject
from app.headers import user_file_response
from app.inference.service import stop_detached_predictors
from app.models import Repository
from app.openapi import bodies_of
from app.repos import service, writes
from app.repos.schemas import FileWritten, RepoCreate, RepoDetail, RepoPublic, RepoUpload
from app.uploads import (
    MAX_JSON_BYTES,
    CappedRoute,
    body_limit,
    discard_upload,
    form_values,
    is_multipart,
    json_body,
    save_upload,
    validated,
)

router = APIRouter(prefix="/api/v1/repos", tags=["repositories"], route_class=CappedRoute)


@router.post("/fork", status_code=201, response_model=RepoPublic,
             openapi_extra=body_limit(MAX_JSON_BYTES))
async def fork_repo(body: RepoCreate, db: SessionDep, user: CurrentUser) -> RepoPublic:
    """Fork a built-in sample repository into the caller's namespace."""
    repo = await run_in_threadpool(writes.fork, db, user, name=body.name,
                                   template=body.template, description=body.description)
    return await run_in_threadpool(service.to_public, db, repo)


@router.post("/upload", status_code=201, response_model=RepoPublic,
             form_limits={"max_files": 1, "max_fields": 4})
async def upload_repo(form: Annotated[RepoUpload, Form(media_type="multipart/form-data")],
                      db: SessionDep, user: CurrentUser) -> RepoPublic:
    """Create a repository from a .zip or .tar.gz of its files (size and count capped)."""
    path = await save_upload(form.archive, max_bytes=get_settings().max_repo_bytes,
                             field="archive")
    try:
        repo, stripped = await run_in_threadpool(writes.from_archive, db, user,
                                                 name=form.name, archive=path)
    finally:
        await run_in_threadpool(discard_upload, path)
    public = await run_in_threadpool(service.to_public, db, repo)
    return public.model_copy(update={"stripped_root": stripped})


@router.post("", status_code=201, response_model=RepoPublic,
             openapi_extra=bodies_of("/api/v1/repos/fork", "/api/v1/repos/upload"))
async def create_repo(request: Request, db: SessionDep, user: CurrentUser) -> RepoPublic:
    """Fork a built-in sample (a JSON body, as `/fork`) or create a repository from an archive
    (a multipart body, as `/upload`)."""
    if is_multipart(request):
        async with request.form(max_files=1, max_fields=4) as form:
            return await upload_repo(validated(RepoUpload, form_values(form)), db, user)
    return await fork_repo(validated(RepoCreate, await json_body(request)), db, user)


@router.get("", response_model=list[RepoPublic])
def list_repos(db: SessionDep, user: CurrentUser) -> list[RepoPublic]:
    """The caller's repositories."""
    return [service.to_public(db, r) for r in service.list_repos(db, user=user)]


@router.get("/{owner}/{name}", response_model=RepoDetail)
def get_repo(owner: str, name: str, db: SessionDep, user: CurrentUser) -> RepoPublic:
    """A repository with its file list and training counts."""
    repo = service.get_repo(db, owner=owner, name=name, user=user)
    return service.to_public(db, repo, detail=True)


@router.delete("/{owner}/{name}", status_code=204)
async def delete_repo(owner: str, name: str, db: SessionDep, user: CurrentUser) -> Response:
    """Delete a repository, its files and its finished trainings."""
    repo = await run_in_threadpool(service.get_repo, db, owner=owner, name=name, user=user)
    service.require_write(repo, user)
    await run_in_threadpool(service.check_deletable, db, repo)
    cleanup = await run_in_threadpool(_delete, db, repo)
    # The delete detached the services' rows of the repository and its trainings (foreign
    # keys set to NULL): stop them, then remove the files, now that the rows are gone for good.
    await stop_detached_predictors()
    await stop_detached_evaluations()
    await run_in_threadpool(cleanup.run)
    return Response(status_code=204)


def _delete(db: Session, repo: Repository) -> Cleanup:
    comparison = repo_subject(repo).workdir
    with transaction(db):
        cleanup = service.delete_repo(db, repo)
    return cleanup.add(comparison)


@router.get("/{owner}/{name}/files/{path:path}", response_class=FileResponse)
def read_file(owner: str, name: str, path: str, db: SessionDep,
              user: CurrentUser) -> FileResponse:
    """One file of the repository: text as `text/plain`, anything else as a download."""
    repo = service.get_repo(db, owner=owner, name=name, user=user)
    return user_file_response(service.read_file(repo, path))


@router.put("/{owner}/{name}/files/{path:path}", response_model=FileWritten,
            openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}, "required": True}})
async def write_file(owner: str, name: str, path: str, request: Request, db: SessionDep,
                     user: CurrentUser) -> FileWritten:
    """Create or replace one file of the repository with the raw request body."""
    repo = await run_in_threadpool(service.get_repo, db, owner=owner, name=name, user=user)
    service.require_write(repo, user)
    limit = get_settings().max_upload_file_bytes
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge(f"file is larger than the limit of {limit} bytes")

    def write() -> PurePosixPath:
        with transaction(db):
            return service.write_file(db, repo, path, bytes(body))

    return FileWritten(path=str(await run_in_threadpool(write)), size=len(body))
