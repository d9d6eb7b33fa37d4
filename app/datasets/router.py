"""Datasets and models over REST."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app import storage
from app.auth.deps import CurrentUser
from app.config import get_settings
from app.datasets import service
from app.datasets.schemas import (
    VISIBILITY,
    DatasetImport,
    DatasetPublic,
    ModelPublic,
    VisibilityUpdate,
)
from app.db import SessionDep, transaction
from app.errors import Forbidden, Invalid
from app.models import Dataset, Model, User
from app.uploads import discard_upload, form_file, form_text, is_multipart, json_body, save_upload

router = APIRouter(prefix="/api/v1", tags=["datasets and models"])

_DATASET_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["name", "archive"],
        "properties": {"name": {"type": "string"},
                       "archive": {"type": "string", "format": "binary", "description":
                                   "cifar-10-binary.tar.gz, or a .zip/.tar.gz of "
                                   "train/<class>/* and test/<class>/* images"},
                       "is_public": {"type": "boolean", "description": VISIBILITY}}}},
    "application/json": {"schema": DatasetImport.model_json_schema()}}}}

_MODEL_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name", "file"],
    "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                   "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                   "is_public": {"type": "boolean", "description": VISIBILITY}}}}}}}


def _flag(value: object) -> bool | None:
    """A form's `is_public`: None when absent (the owner's default applies)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


@router.post("/datasets", status_code=201, response_model=DatasetPublic,
             openapi_extra=_DATASET_BODY)
async def create_dataset(request: Request, db: SessionDep, user: CurrentUser) -> DatasetPublic:
    """Import a dataset: upload an archive (multipart), or, as an admin, a server path or URL."""
    if is_multipart(request):
        async with request.form(max_files=1, max_fields=5) as form:
            name = form_text(form, "name")
            public = _flag(form.get("is_public"))
            path = await save_upload(form_file(form, "archive"), field="archive",
                                     max_bytes=get_settings().max_dataset_bytes)
        try:
            dataset = await run_in_threadpool(_import, db, user, name=name, source=path,
                                              is_public=public, field="archive")
        finally:
            await run_in_threadpool(discard_upload, path)
        return service.dataset_public(dataset)
    try:
        body = DatasetImport.model_validate(await json_body(request))
    except ValidationError as exc:
        fields = [{"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]}
                  for e in exc.errors()]
        raise Invalid("; ".join(f"{f['field']}: {f['message']}" for f in fields),
                      fields=fields) from exc
    if not user.is_admin:
        raise Forbidden("only an admin may import from a server path or URL; upload the "
                        "archive as multipart 'archive' instead")
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


@router.post("/models", status_code=201, response_model=ModelPublic, openapi_extra=_MODEL_BODY)
async def create_model(request: Request, db: SessionDep, user: CurrentUser) -> ModelPublic:
    """Upload checkpoint files as a model (usable as `models/<owner>/<name>/<file>` inputs)."""
    limit = get_settings().max_dataset_bytes
    saved: list[tuple[str, Path]] = []
    try:
        async with request.form(max_files=20, max_fields=5) as form:
            name = form_text(form, "name")
            description = str(form.get("description") or "")[:200]
            public = _flag(form.get("is_public"))
            uploads = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            if not uploads:
                form_file(form, "file")  # raises the "required" error
            for upload in uploads:
                saved.append((upload.filename or "model.ckpt",
                              await save_upload(upload, max_bytes=limit, field="file")))
        model = await run_in_threadpool(_create_model, db, user, name=name, files=saved,
                                        description=description, is_public=public)
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
