"""Repositories: fork the sample, create from an archive, read and write files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import storage
from app.archives import safe_extract
from app.config import get_settings
from app.db import Cleanup
from app.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from app.models import UNFINISHED, Repository, Training, User
from app.models.base import utcnow
from app.names import check_name
from app.repos.schemas import RepoDetail, RepoFile, RepoPublic

TEMPLATES = {"resnet50": "resnet50"}


def _check_new_name(db: Session, *, owner: User, name: str) -> None:
    check_name(name)
    same = db.scalar(select(Repository.name).where(
        Repository.owner_id == owner.id, func.lower(Repository.name) == name.lower()))
    if same is not None:
        also = "" if same == name else " (names ignore case)"
        raise Conflict(f"repository '{owner.username}/{same}' already exists{also}",
                       code="duplicate_repo")


def _new_repo(db: Session, *, owner: User, name: str, template: str | None,
              description: str, files: Path) -> Repository:
    # The row first: once it is flushed this transaction owns the name (SQLite's write lock,
    # PostgreSQL's unique index), so a folder already there is the leftover of a creation
    # that died before its commit, never another live repository's files.
    repo = Repository(owner=owner, name=name, template=template, description=description)
    db.add(repo)
    try:
        db.flush()
    except IntegrityError as exc:
        raise Conflict(f"repository '{owner.username}/{name}' already exists",
                       code="duplicate_repo") from exc
    dest = storage.repo_dir(owner.username, name)
    storage.remove_tree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    files.rename(dest)
    return repo


def fork_template(db: Session, *, owner: User, name: str, template: str,
                  description: str = "") -> Repository:
    """Create `owner/name` as a copy of a built-in sample repository (the caller commits and,
    if that fails, removes `repo_files`)."""
    if template not in TEMPLATES:
        raise Invalid(f"template: unknown template '{template}'; known: {', '.join(TEMPLATES)}",
                      fields=[{"field": "template", "message": "unknown template"}])
    _check_new_name(db, owner=owner, name=name)
    stage = storage.staging_dir("fork-")
    try:
        storage.copy_tree_atomic(storage.SAMPLES_DIR / TEMPLATES[template], stage / "tree")
        return _new_repo(db, owner=owner, name=name, template=template,
                         description=description or f"Fork of the {template} sample",
                         files=stage / "tree")
    finally:
        storage.remove_tree(stage)


def create_from_archive(db: Session, *, owner: User, name: str, archive: Path
                        ) -> tuple[Repository, str | None]:
    """Create `owner/name` from an uploaded .zip or .tar.gz (size and count capped; the caller
    commits and, if that fails, removes `repo_files`).

    Returns the repository and the archive's single top folder when it was left out.
    """
    settings = get_settings()
    _check_new_name(db, owner=owner, name=name)
    stage = storage.staging_dir("repo-")
    try:
        # Extracted before the row is written, so no lock is held while it runs.
        stats = safe_extract(archive, stage / "tree", max_bytes=settings.max_repo_bytes,
                             max_files=settings.max_repo_files,
                             strip_single_root=lambda top: not configs_name_folder(top))
        repo = _new_repo(db, owner=owner, name=name, template=None, description="",
                         files=stage / "tree")
        return repo, stats.stripped_root
    finally:
        storage.remove_tree(stage)


def repo_files(repo: Repository) -> Path:
    """The folder of a repository's files."""
    return storage.repo_dir(repo.owner.username, repo.name)


def configs_name_folder(folder: Path, *, max_configs: int = 50) -> bool:
    """True when a config.json-like file under `folder` has a code_dir inside `folder/`.

    Such configs were written for the archive's layout as it is: its top folder must stay.
    """
    from app.errors import AppError
    from app.trainings.config import parse_config_text

    for seen, path in enumerate(p for p in folder.rglob("*.json") if p.is_file()):
        if seen >= max_configs:
            break
        if path.is_symlink() or path.stat().st_size > 64 * 1024:
            continue
        try:
            data = parse_config_text(path.read_bytes(), source=path.name)
        except AppError:
            continue
        code_dir = data.get("code_dir") if isinstance(data, dict) else None
        if isinstance(code_dir, str) and code_dir.startswith(f"{folder.name}/"):
            return True
    return False


def get_repo(db: Session, *, owner: str, name: str, user: User) -> Repository:
    """The repository `owner/name`, if the caller may see it."""
    repo = db.scalar(select(Repository).join(User, Repository.owner_id == User.id)
                     .where(User.username == owner, Repository.name == name))
    if repo is None or not can_read(repo, user):
        raise NotFound(f"repository '{owner}/{name}' not found")
    return repo


def can_read(repo: Repository, user: User) -> bool:
    """Owners and admins see a repository."""
    return user.is_admin or repo.owner_id == user.id


def require_write(repo: Repository, user: User) -> None:
    """Only the owner (or an admin) changes a repository."""
    if not (user.is_admin or repo.owner_id == user.id):
        raise Forbidden(f"only {repo.owner.username} may change {repo.full_name}")


def list_repos(db: Session, *, user: User) -> list[Repository]:
    """The caller's repositories (every repository for an admin)."""
    query = select(Repository).order_by(Repository.created_at.desc())
    if not user.is_admin:
        query = query.where(Repository.owner_id == user.id)
    return list(db.scalars(query))


def list_files(repo: Repository) -> list[RepoFile]:
    """Every file of the repository, sorted by path."""
    root = storage.repo_dir(repo.owner.username, repo.name)
    files: list[RepoFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if path.is_symlink():
                continue
            stat = path.stat()
            files.append(RepoFile(path=path.relative_to(root).as_posix(), size=stat.st_size,
                                  modified_at=datetime.fromtimestamp(stat.st_mtime, UTC)))
    return sorted(files, key=lambda f: f.path)


def file_path(repo: Repository, raw: str) -> Path:
    """The on-disk path of a repo file given by the user."""
    rel = storage.relative_path(raw, field="path")
    root = storage.repo_dir(repo.owner.username, repo.name)
    return storage.resolve_inside(root, rel, field="path")


def read_file(repo: Repository, raw: str) -> Path:
    """A file of the repository (404 when absent)."""
    path = file_path(repo, raw)
    if not path.is_file():
        raise NotFound(f"{repo.full_name} has no file '{raw}'")
    return path


def write_file(db: Session, repo: Repository, raw: str, content: bytes) -> PurePosixPath:
    """Write a repository file atomically (create or replace)."""
    settings = get_settings()
    if len(content) > settings.max_upload_file_bytes:
        raise TooLarge(f"file is {len(content)} bytes; the limit is "
                       f"{settings.max_upload_file_bytes} bytes")
    path = file_path(repo, raw)
    if path.is_dir():
        raise Invalid(f"path: '{raw}' is a folder", fields=[{"field": "path",
                                                             "message": "is a folder"}])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(content)
    tmp.replace(path)
    repo.updated_at = utcnow()
    return PurePosixPath(path.relative_to(storage.repo_dir(repo.owner.username, repo.name)))


def check_deletable(db: Session, repo: Repository) -> None:
    """Refuse to delete a repository while one of its trainings is unfinished."""
    busy = db.scalar(select(Training.id).where(Training.repo_id == repo.id,
                                               Training.status.in_(UNFINISHED)))
    if busy is not None:
        raise Conflict(f"training {busy} of {repo.full_name} is not finished; terminate it "
                       "first", code="training_running")


def training_ids(db: Session, repo: Repository) -> list[int]:
    """Ids of the repository's trainings."""
    return list(db.scalars(select(Training.id).where(Training.repo_id == repo.id)))


def delete_repo(db: Session, repo: Repository) -> Cleanup:
    """Delete a repository with its trainings (none unfinished); returns their files, to remove
    after the commit."""
    check_deletable(db, repo)
    cleanup = Cleanup([repo_files(repo)])
    cleanup.add(*(storage.training_dir(tid) for tid in training_ids(db, repo)))
    db.delete(repo)
    db.flush()
    return cleanup


def to_public(db: Session, repo: Repository, *, detail: bool = False) -> RepoPublic:
    """The API view of a repository, with its training counts."""
    count = db.scalar(select(func.count()).where(Training.repo_id == repo.id)) or 0
    unfinished = db.scalar(select(Training.id).where(Training.repo_id == repo.id,
                                                     Training.status.in_(UNFINISHED)))
    fields = dict(owner=repo.owner.username, name=repo.name, full_name=repo.full_name,
                  template=repo.template, description=repo.description,
                  created_at=repo.created_at, updated_at=repo.updated_at, trainings=count,
                  unfinished_training=unfinished)
    if detail:
        return RepoDetail(**fields, files=list_files(repo))
    return RepoPublic(**fields)
