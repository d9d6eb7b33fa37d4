"""One transaction boundary: routes commit through `app.db.transaction`, services only flush,
and the files of deleted rows go only after the commit (on SQLite and PostgreSQL)."""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import Base
from app.models import Model, Repository, Training
from tests.inproc import in_process_api
from tests.pg import private_database
from tests.repo_files import config, create_repo, submit

APP = Path(__file__).resolve().parents[1] / "app"
# Who may end a transaction: `app.db.transaction`, and work that is not a request.
OWN_TRANSACTIONS = {
    "db.py": {"transaction"},                            # the boundary itself
    "cli/main.py": {"_bootstrap_admin"},                 # `trainyard up` creating the admin
    "workers/lease.py": None, "workers/registry.py": None, "workers/reconciler.py": None,
    "launcher/records.py": {"call"},  # `transact`: the launcher's background steps
}


def _transaction_ends(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(enclosing function, line) of every `.commit()` / `.rollback()` call."""
    def visit(node: ast.AST, func: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) \
                else func
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) \
                    and child.func.attr in ("commit", "rollback"):
                yield name, child.lineno
            yield from visit(child, name)
    yield from visit(tree, "<module>")


def test_only_the_transaction_helper_commits_or_rolls_back() -> None:
    found = []
    for path in sorted(APP.rglob("*.py")):
        rel = path.relative_to(APP).as_posix()
        allowed = OWN_TRANSACTIONS.get(rel, set())
        for func, line in _transaction_ends(ast.parse(path.read_text(), str(path))):
            if allowed is None or func in allowed:
                continue
            found.append(f"app/{rel}:{line} in {func}()")
    assert not found, ("commit/rollback outside app.db.transaction (services flush; routes "
                       f"end the request's transaction with `with transaction(db):`): {found}")


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in this process on a fresh SQLite or PostgreSQL database."""
    if request.param == "sqlite":
        with in_process_api(tmp_path, monkeypatch) as client:
            yield client
        return
    with private_database() as url, \
            in_process_api(tmp_path, monkeypatch, database_url=url) as client:
        yield client


@contextmanager
def failing_commits(table: type[Base]) -> Iterator[None]:
    """Make the commit of every transaction that added or deleted a `table` row fail as a busy
    database would (after the services' flushes: the last step of the request)."""
    def note(session: Session, _context: Any) -> None:
        session.info.setdefault("touched", set()).update(
            type(row) for row in [*session.new, *session.deleted])

    def refuse(session: Session) -> None:
        if table in session.info.pop("touched", set()):
            raise OperationalError("COMMIT", None, sqlite3.OperationalError("database is locked"))

    event.listen(Session, "after_flush", note)
    event.listen(Session, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", refuse)
        event.remove(Session, "after_flush", note)


def _busy(response: Any) -> None:
    assert response.status_code == 503 and response.json()["error"] == "busy", response.text


def test_a_creation_that_does_not_commit_leaves_no_row_and_no_files(
        api: TestClient, tmp_path: Path) -> None:
    with failing_commits(Repository):
        _busy(api.post("/api/v1/repos", json={"name": "gone", "template": "resnet50"}))
    assert api.get("/api/v1/repos/admin/gone").status_code == 404
    assert not (tmp_path / "repos" / "admin" / "gone").exists()
    assert api.post("/api/v1/repos", json={"name": "gone", "template": "resnet50"}) \
        .status_code == 201

    with failing_commits(Model):
        _busy(api.post("/api/v1/models", data={"name": "m1"},
                       files={"file": ("best.ckpt", b"weights")}))
    assert api.get("/api/v1/models/admin/m1").status_code == 404
    assert not (tmp_path / "models" / "admin" / "m1").exists()

    repo = create_repo(api)
    with failing_commits(Training):
        _busy(submit(api, repo, config("never")))
    assert api.get(f"/api/v1/repos/{repo}/trainings").json() == []
    assert not any((tmp_path / "trainings").glob("*"))


def test_a_delete_that_does_not_commit_keeps_the_rows_and_their_files(
        api: TestClient, tmp_path: Path) -> None:
    assert api.post("/api/v1/repos", json={"name": "kept", "template": "resnet50"}) \
        .status_code == 201
    repo_files = tmp_path / "repos" / "admin" / "kept"
    with failing_commits(Repository):
        _busy(api.delete("/api/v1/repos/admin/kept"))
    assert api.get("/api/v1/repos/admin/kept").status_code == 200
    assert (repo_files / "train" / "config_quick.json").is_file()

    assert api.post("/api/v1/models", data={"name": "m1"},
                    files={"file": ("best.ckpt", b"weights")}).status_code == 201
    with failing_commits(Model):
        _busy(api.delete("/api/v1/models/admin/m1"))
    assert api.get("/api/v1/models/admin/m1").status_code == 200
    assert (tmp_path / "models" / "admin" / "m1" / "best.ckpt").read_bytes() == b"weights"

    repo = create_repo(api)
    created = submit(api, repo, config("kept-run"))
    assert created.status_code == 201, created.text
    training_id = created.json()["id"]  # Pending (no broker here): deleting terminates it first
    workspace = tmp_path / "trainings" / str(training_id) / "workspace"
    with failing_commits(Training):
        _busy(api.delete(f"/api/v1/trainings/{training_id}"))
    assert api.get(f"/api/v1/trainings/{training_id}").json()["status"] == "Terminated"
    assert (workspace / "code" / "main.py").is_file()

    # Once the commits go through, the files go too.
    assert api.delete(f"/api/v1/trainings/{training_id}").status_code == 204
    assert not workspace.parent.exists()
    assert api.delete("/api/v1/models/admin/m1").status_code == 204
    assert not (tmp_path / "models" / "admin" / "m1").exists()
    assert api.delete("/api/v1/repos/admin/kept").status_code == 204
    assert not repo_files.exists()
