"""Datasets and models over REST."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app import storage
from app.auth.deps import CurrentUser
from app.config import get_settings
from app.datasets import service
from app.datasets.schemas import (
    DatasetImport,
    DatasetPublic,
    DatasetUpload,
    ModelPublic,
    ModelUpload,
    VisibilityUpdate,
)
from app.db import SessionDep, transaction
from app.errors import Forbidden, Invalid
from app.models import Dataset, Model, User
from app.openapi import bodies_of
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

router = APIRouter(prefix="/api/v1", tags=["datasets and models"], route_class=CappedRoute)


@router.post("/datasets/upload", status_code=201, response_model=DatasetPublic,
             form_limits={"max_files": 1, "max_fields": 4})
async def upload_dataset(form: Annotated[DatasetUpload, Form(media_type="multipart/form-data")],
                         db: SessionDep, user: CurrentUser) -> DatasetPublic:
    """Import a dataset from an uploaded archive (CIFAR-10 binary, or an image folder tree)."""
    path = await save_upload(form.archive, field="archive",
                             max_bytes=get_settings().max_dataset_bytes)
    try:
        dataset = await run_in_threadpool(_import, db, user, name=form.name, source=path,
                                          is_public=form.is_public, field="archive")
    finally:
        await run_in_threadpool(discard_upload, path)
    return service.dataset_public(dataset)


@router.post("/datasets/import", status_code=201, response_model=DatasetPublic,
             openapi_extra=body_limit(MAX_JSON_BYTES))
async def import_dataset(body: DatasetImport, db: SessionDep,
                         user: CurrentUser) -> DatasetPublic:
    """Import a dataset from a path on the server or a URL the server downloads (admins)."""
    if not user.is_admin:
        raise Forbidden("only an admin may import from a server path or URL; upload the "
                        "archive to /api/v1/datasets/upload instead")
    if bool(body.path) == bool(body.url):
        raise Invalid("give exactly one of 'path' and 'url'",
                      fields=[{"field": "path", "message": "path or url"}])
    downloaded: Path | None = None
    try:
        if body.url:
            downloaded = await run_in_threadpool(service.fetch_archive, body.url,
                                                 sha256=body.sha256, md5=body.md5)
            source = downloaded
        else:
            source = service.server_path(body.path or "")
        dataset = await run_in_threadpool(_import, db, user, name=body.name, source=source,
                                          is_public=body.is_public,
                                          field="url" if body.url else "path")
    finally:
        if downloaded is not None:
            await run_in_threadpool(discard_upload, downloaded)
    return service.dataset_public(dataset)


@router.post("/datasets", status_code=201, response_model=DatasetPublic,
             openapi_extra=bodies_of("/api/v1/datasets/upload", "/api/v1/datasets/import"))
async def create_dataset(request: Request, db: SessionDep, user: CurrentUser) -> DatasetPublic:
    """Upload a dataset archive (a multipart body, as `/upload`) or import one on the server (a
    JSON body, as `/import`, admins only)."""
    if is_multipart(request):
        async with request.form(max_files=1, max_fields=5) as form:
            return await upload_dataset(validated(DatasetUpload, form_values(form)), db, user)
    return await import_dataset(validated(DatasetImport, await json_body(request)), db, user)


# Each write transaction runs start to commit in one worker thread (see app/db.py).
def _import(db: Session, user: User, *, name: str, source: Path, is_public: bool | None,
            field: str) -> Dataset:
    with transaction(db) as txn:
        dataset = service.import_dataset_file(db, owner=user, name=name, source=source,
                                              is_public=is_public, field=field)
        txn.on_rollback(storage.dataset_dir(user.username, name))
    return dataset


def _create_model(db: Session, user: User, *, name: str, files: list[tuple[str, Path]],
                  description: str, is_public: bool | None) -> Model:
    with transaction(db) as txn:
        model = service.create_model(db, owner=user, name=name, files=files,
                                     description=description, is_public=is_public)
        txn.on_rollback(storage.model_dir(user.username, name))
    return model


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(db: SessionDep, user: CurrentUser) -> list[DatasetPublic]:
    """Datasets the caller may use as training inputs."""
    return [service.dataset_public(d) for d in service.list_datasets(db, user=user)]


@router.get("/datasets/{owner}/{name}", response_model=DatasetPublic)
def get_dataset(owner: str, name: str, db: SessionDep, user: CurrentUser) -> DatasetPublic:
    """One dataset with its classes and record counts."""
    return service.dataset_public(service.get_dataset(db, owner=owner, name=name, user=user))


@router.patch("/datasets/{owner}/{name}", response_model=DatasetPublic)
def patch_dataset(owner: str, name: str, body: VisibilityUpdate, db: SessionDep,
                  user: CurrentUser) -> DatasetPublic:
    """Make a dataset public (every user may list and use it) or private (its owner only)."""
    dataset = service.get_dataset(db, owner=owner, name=name, user=user)
    with transaction(db):
        service.set_visibility(dataset, user=user, is_public=body.is_public, kind="dataset")
    return service.dataset_public(dataset)


@router.delete("/datasets/{owner}/{name}", status_code=204)
def delete_dataset(owner: str, name: str, db: SessionDep, user: CurrentUser) -> Response:
    """Delete a dataset and its files."""
    dataset = service.get_dataset(db, owner=owner, name=name, user=user)
    with transaction(db):
        cleanup = service.delete_dataset(db, dataset, user=user)
    cleanup.run()  # only once the row is gone for good
    return Response(status_code=204)


@router.post("/models", status_code=201, response_model=ModelPublic,
             form_limits={"max_files": 20, "max_fields": 5})
async def create_model(form: Annotated[ModelUpload, Form(media_type="multipart/form-data")],
                       db: SessionDep, user: CurrentUser) -> ModelPublic:
    """Upload checkpoint files as a model (usable as `models/<owner>/<name>/<file>` inputs)."""
    limit = get_settings().max_dataset_bytes
    saved: list[tuple[str, Path]] = []
    try:
        for upload in form.file:
            saved.append((upload.filename or "model.ckpt",
                          await save_upload(upload, max_bytes=limit, field="file")))
        model = await run_in_threadpool(_create_model, db, user, name=form.name, files=saved,
                                        description=form.description,
                                        is_public=form.is_public)
    finally:
        for _, path in saved:
            await run_in_threadpool(discard_upload, path)
    return service.model_public(model)


@router.get("/models", response_model=list[ModelPublic])
def list_models(db: SessionDep, user: CurrentUser) -> list[ModelPublic]:
    """Models the caller may use as training inputs."""
    return [service.model_public(m) for m in service.list_models(db, user=user)]


@router.get("/models/{owner}/{name}", response_model=ModelPublic)
def get_model(owner: str, name: str, db: SessionDep, user: CurrentUser) -> ModelPublic:
    """One model with its files."""
    return service.model_public(service.get_model(db, owner=owner, name=name, user=user))


@router.patch("/models/{owner}/{name}", response_model=ModelPublic)
def patch_model(owner: str, name: str, body: VisibilityUpdate, db: SessionDep,
                user: CurrentUser) -> ModelPublic:
    """Make a model public (every user may list and use it) or private (its owner only)."""
    model = service.get_model(db, owner=owner, name=name, user=user)
    with transaction(db):
        service.set_visibility(model, user=user, is_public=body.is_public, kind="model")
    return service.model_public(model)


@router.delete("/models/{owner}/{name}", status_code=204)
def delete_model(owner: str, name: str, db: SessionDep, user: CurrentUser) -> Response:
    """Delete a model and its files."""
    model = service.get_model(db, owner=owner, name=name, user=user)
    with transaction(db):
        cleanup = service.delete_model(db, model, user=user)
    cleanup.run()  # only once the row is gone for good
    return Response(status_code=204)
