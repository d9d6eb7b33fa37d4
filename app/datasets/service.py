"""Datasets and models: import, register, list, delete (files under the data dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.datasets.download import CIFAR10_BINARY_MD5, CIFAR10_BINARY_URL, download
from app.datasets.importer import import_dataset
from app.datasets.schemas import DatasetPublic, ModelFile, ModelPublic
from app.db import Cleanup
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.models import Dataset, Model, User
from app.names import check_name

MODEL_SUFFIXES = (".ckpt", ".mindir", ".air", ".onnx", ".safetensors", ".json", ".txt")


def _refuse_duplicate(db: Session, table: type[Dataset] | type[Model], owner: User,
                      name: str, kind: str) -> None:
    exists = db.scalar(select(table.id).where(table.owner_id == owner.id, table.name == name))
    if exists is not None:
        raise Conflict(f"{kind} '{owner.username}/{name}' already exists; choose another name "
                       f"or delete it (`trainyard {kind}s delete {owner.username}/{name}`)",
                       code=f"duplicate_{kind}")


def default_visibility(owner: User, is_public: bool | None) -> bool:
    """Private unless asked otherwise; an admin's datasets and models are the platform's and
    public unless asked otherwise (the shared CIFAR-10 every sample config reads)."""
    return owner.is_admin if is_public is None else is_public


def import_dataset_file(db: Session, *, owner: User, name: str, source: Path,
                        is_public: bool | None = None, field: str = "archive") -> Dataset:
    """Import a folder or archive as `datasets/<owner>/<name>/` (atomic; the caller commits
    and, if that fails, removes the folder)."""
    check_name(name, what="dataset")
    _refuse_duplicate(db, Dataset, owner, name, "dataset")
    dest = storage.dataset_dir(owner.username, name)
    if dest.exists():
        raise Conflict(f"files of dataset '{owner.username}/{name}' are still on disk; choose "
                       "another name", code="duplicate_dataset")
    dest.parent.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    info = import_dataset(source, dest, max_bytes=settings.max_dataset_bytes, field=field,
                          max_image_bytes=settings.max_image_bytes)
    dataset = Dataset(owner_id=owner.id, name=name, is_public=default_visibility(owner, is_public),
                      format=info.format,
                      info=info.model_dump(mode="json"), size_bytes=info.bytes)
    db.add(dataset)
    try:
        db.flush()
    except IntegrityError as exc:
        storage.remove_tree(dest)
        raise Conflict(f"dataset '{owner.username}/{name}' already exists",
                       code="duplicate_dataset") from exc
    return dataset


def fetch_archive(url: str, *, sha256: str | None, md5: str | None) -> Path:
    """Download an archive to scratch space, verifying its checksum (the caller deletes it)."""
    if url == CIFAR10_BINARY_URL and not (sha256 or md5):
        md5 = CIFAR10_BINARY_MD5
    folder = storage.staging_dir("download-")
    try:
        return download(url, folder / (Path(url).name or "archive"), sha256=sha256, md5=md5,
                        max_bytes=get_settings().max_dataset_bytes)
    except BaseException:
        storage.remove_tree(folder)
        raise


def server_path(raw: str) -> Path:
    """A path on the server given by an admin (must exist)."""
    path = Path(raw).expanduser()
    if not path.is_absolute() or not path.exists():
        raise Invalid(f"path: {raw} is not an existing absolute path on the server",
                      fields=[{"field": "path", "message": "not found on the server"}])
    return path


def visible(user: User, row: Dataset | Model) -> bool:
    """Public rows, the caller's own, and everything for admins."""
    return row.is_public or row.owner_id == user.id or user.is_admin


_Entry = TypeVar("_Entry", Dataset, Model)


def _list(db: Session, table: type[_Entry], *, user: User) -> list[_Entry]:
    query = select(table).order_by(table.created_at.desc())
    if not user.is_admin:
        query = query.where(or_(table.is_public, table.owner_id == user.id))
    return list(db.scalars(query))


def _get(db: Session, table: type[_Entry], *, owner: str, name: str, user: User,
         kind: str) -> _Entry:
    row = db.scalar(select(table).join(User, table.owner_id == User.id)
                    .where(User.username == owner, table.name == name))
    if row is None or not visible(user, row):
        raise NotFound(f"{kind} '{owner}/{name}' not found")
    return row


def _require_owner(row: Dataset | Model, user: User, *, kind: str, action: str) -> None:
    if not (user.is_admin or row.owner_id == user.id):
        raise Forbidden(f"only the owner may {action} a {kind}")


def set_visibility(row: Dataset | Model, *, user: User, is_public: bool, kind: str) -> None:
    """Make a dataset or model public or private (its owner or an admin)."""
    _require_owner(row, user, kind=kind, action="change the visibility of")
    row.is_public = is_public


def _delete(db: Session, row: Dataset | Model, folder: Path, *, user: User,
            kind: str) -> Cleanup:
    _require_owner(row, user, kind=kind, action="delete")
    db.delete(row)
    db.flush()
    return Cleanup([folder])


def list_datasets(db: Session, *, user: User) -> list[Dataset]:
    """Datasets the caller may use."""
    return _list(db, Dataset, user=user)


def get_dataset(db: Session, *, owner: str, name: str, user: User) -> Dataset:
    """One dataset the caller may see."""
    return _get(db, Dataset, owner=owner, name=name, user=user, kind="dataset")


def delete_dataset(db: Session, dataset: Dataset, *, user: User) -> Cleanup:
    """Delete a dataset's row (its owner or an admin); returns its files, to remove after the
    commit."""
    return _delete(db, dataset, storage.dataset_dir(dataset.owner.username, dataset.name),
                   user=user, kind="dataset")


def dataset_public(row: Dataset) -> DatasetPublic:
    """The API view of a dataset."""
    return DatasetPublic(owner=row.owner.username, name=row.name,
                         input_url=f"datasets/{row.owner.username}/{row.name}/",
                         format=row.format, is_public=row.is_public, size_bytes=row.size_bytes,
                         info=row.info, created_at=row.created_at)


def create_model(db: Session, *, owner: User, name: str, files: list[tuple[str, Path]],
                 description: str = "", is_public: bool | None = None,
                 source_training_id: int | None = None) -> Model:
    """Register `models/<owner>/<name>/` holding `files` (moved into place atomically; the
    caller commits and, if that fails, removes the folder)."""
    check_name(name, what="model")
    _refuse_duplicate(db, Model, owner, name, "model")
    if not files:
        raise Invalid("file: at least one checkpoint file is required",
                      fields=[{"field": "file", "message": "required"}])
    stage = storage.staging_dir("model-")
    try:
        total = 0
        for filename, path in files:
            base = os.path.basename(filename)
            if not base or base.startswith(".") or not base.endswith(MODEL_SUFFIXES):
                allowed = ", ".join(MODEL_SUFFIXES)
                raise Invalid(f"file: '{filename}' is not a model file ({allowed})",
                              fields=[{"field": "file", "message": "unsupported file type"}])
            shutil.copyfile(path, stage / base)
            total += (stage / base).stat().st_size
        dest = storage.model_dir(owner.username, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(dest)
    except BaseException:
        storage.remove_tree(stage)
        raise
    model = Model(owner_id=owner.id, name=name, description=description,
                  is_public=default_visibility(owner, is_public),
                  source_training_id=source_training_id, size_bytes=total,
                  info={"files": sorted(os.path.basename(f) for f, _ in files)})
    db.add(model)
    try:
        db.flush()
    except IntegrityError as exc:
        storage.remove_tree(dest)
        raise Conflict(f"model '{owner.username}/{name}' already exists",
                       code="duplicate_model") from exc
    return model


def list_models(db: Session, *, user: User) -> list[Model]:
    """Models the caller may use."""
    return _list(db, Model, user=user)


def get_model(db: Session, *, owner: str, name: str, user: User) -> Model:
    """One model the caller may see."""
    return _get(db, Model, owner=owner, name=name, user=user, kind="model")


def delete_model(db: Session, model: Model, *, user: User) -> Cleanup:
    """Delete a model's row (its owner or an admin); returns its files, to remove after the
    commit."""
    return _delete(db, model, storage.model_dir(model.owner.username, model.name),
                   user=user, kind="model")


def model_public(row: Model) -> ModelPublic:
    """The API view of a model with its files."""
    root = storage.model_dir(row.owner.username, row.name)
    files = sorted((ModelFile(path=p.relative_to(root).as_posix(), size=p.stat().st_size)
                    for p in root.rglob("*") if p.is_file()), key=lambda f: f.path) \
        if root.exists() else []
    return ModelPublic(owner=row.owner.username, name=row.name,
                       input_url=f"models/{row.owner.username}/{row.name}/",
                       description=row.description, is_public=row.is_public,
                       size_bytes=row.size_bytes, source_training_id=row.source_training_id,
                       files=files, created_at=row.created_at)
