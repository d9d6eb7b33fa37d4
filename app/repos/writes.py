"""Repository creations as whole writes, shared by the REST routes and the dashboard's forms.

Each runs from its first write to its commit in one thread (call it with `run_in_threadpool`:
SQLite's write lock is never held across an `await`), commits through `app.db.transaction`,
and removes the new repository's files if the commit fails.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.db import transaction
from app.models import Repository, User
from app.repos import service


def fork(db: Session, user: User, *, name: str, template: str,
         description: str = "") -> Repository:
    """Fork a built-in sample into `user`'s namespace and commit."""
    with transaction(db) as txn:
        repo = service.fork_template(db, owner=user, name=name, template=template,
                                     description=description)
        txn.on_rollback(service.repo_files(repo))
    return repo


def from_archive(db: Session, user: User, *, name: str,
                 archive: Path) -> tuple[Repository, str | None]:
    """Create a repository from an uploaded archive and commit; also the top folder left out
    of it, if its files all sat in one."""
    with transaction(db) as txn:
        repo, stripped = service.create_from_archive(db, owner=user, name=name, archive=archive)
        txn.on_rollback(service.repo_files(repo))
    return repo, stripped
