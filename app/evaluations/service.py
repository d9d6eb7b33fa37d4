"""Evaluation rules and rows: who may start what, and the status recorded in the database.

The row is the registry shared by every API worker: status, the Aim process's pid and port.
Transitions are conditional updates on (status, pid), so concurrent workers never both win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import storage
from app.errors import Conflict, NotFound
from app.evaluations import sources
from app.evaluations.aim_process import box_of
from app.evaluations.schemas import EvaluationPublic
from app.evaluations.sources import Subject
from app.models import (
    EVALUATION_ACTIVE,
    Evaluation,
    EvaluationStatus,
    Repository,
    Training,
    TrainingStatus,
    User,
)
from app.models.base import utcnow
from app.repos.service import can_read

LOG_TAIL_LINES = 20


def require_completed(training: Training) -> None:
    """Evaluations are for Completed trainings (409 otherwise)."""
    if training.status != TrainingStatus.COMPLETED:
        raise Conflict(f"training {training.id} is {training.status}: only a Completed "
                       "training can be evaluated", code="training_not_completed")


def require_readable_repo(repo: Repository | None, user: User, what: str) -> Repository:
    """`repo` if the caller may read it (404 otherwise)."""
    if repo is None or not can_read(repo, user):
        raise NotFound(f"{what} not found")
    return repo


def get_row(db: Session, subject: Subject) -> Evaluation | None:
    """The evaluation row of `subject`, if any."""
    column = Evaluation.training_id if subject.kind == "training" else Evaluation.repo_id
    return db.scalar(select(Evaluation).where(column == subject.id))


def to_public(subject: Subject, row: Evaluation, *, idle_s: int) -> EvaluationPublic:
    """The API view of an evaluation."""
    return EvaluationPublic(
        training_id=row.training_id, repo_id=row.repo_id, type=row.type, aim_path=row.aim_path,
        status=row.status, error=row.error, url=subject.url,
        report_url=subject.report_url, created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=(row.last_used_at + timedelta(seconds=idle_s)
                    if row.status in EVALUATION_ACTIVE else None))


def claim(db: Session, subject: Subject, *, kind: str, aim_path: str | None,
          seen: Evaluation | None) -> Evaluation | None:
    """Mark the evaluation `starting`; None when another request got there first."""
    now = utcnow()
    values: dict[str, Any] = {"type": kind, "aim_path": aim_path,
                              "status": EvaluationStatus.STARTING, "error": None, "pid": None,
                              "socket": None, "last_used_at": now}
    if seen is None:
        row = Evaluation(training_id=subject.id if subject.kind == "training" else None,
                         repo_id=subject.id if subject.kind == "repo" else None,
                         created_at=now, **values)
        db.add(row)
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            return None
        return row
    pid_matches = (Evaluation.pid.is_(None) if seen.pid is None
                   else Evaluation.pid == seen.pid)
    result = db.execute(update(Evaluation).where(
        Evaluation.id == seen.id, Evaluation.status == seen.status, pid_matches)
        .values(created_at=now, **values))
    db.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.get(Evaluation, seen.id, populate_existing=True)


def record_pid(db: Session, row_id: int, pid: int, socket: str) -> bool:
    """Store the pid of the process started for a claimed row, and the socket it serves on."""
    result = db.execute(update(Evaluation).where(
        Evaluation.id == row_id, Evaluation.status == EvaluationStatus.STARTING,
        Evaluation.pid.is_(None))
        .values(pid=pid, socket=socket))
    db.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark(db: Session, row_id: int, *, pid: int | None, status: str,
         error: str | None = None) -> bool:
    """Move an active row to `status` if it still belongs to process `pid`."""
    pid_matches = Evaluation.pid.is_(None) if pid is None else Evaluation.pid == pid
    values: dict[str, Any] = {"status": status, "error": error}
    if status == EvaluationStatus.RUNNING:  # idle time counts from when the report is ready
        values["last_used_at"] = utcnow()
    result = db.execute(update(Evaluation).where(
        Evaluation.id == row_id, Evaluation.status.in_(EVALUATION_ACTIVE), pid_matches
    ).values(**values))
    db.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def touch(db: Session, row_id: int) -> None:
    """Record that the report was just used (it postpones expiry)."""
    db.execute(update(Evaluation).where(Evaluation.id == row_id).values(last_used_at=utcnow()))
    db.commit()


def idle_rows(db: Session, *, idle_s: float) -> list[Evaluation]:
    """Running reports unused for `idle_s` seconds (starting ones are not idle)."""
    cutoff = utcnow() - timedelta(seconds=idle_s)
    return list(db.scalars(select(Evaluation).where(Evaluation.status == EvaluationStatus.RUNNING,
                                                    Evaluation.last_used_at < cutoff)))


def active_rows(db: Session) -> list[Evaluation]:
    """Every active row, least recently used first."""
    return list(db.scalars(select(Evaluation).where(Evaluation.status.in_(EVALUATION_ACTIVE))
                           .order_by(Evaluation.last_used_at)))


def rows_by_pid(db: Session, pids: list[int]) -> dict[int, Evaluation]:
    """Active rows owning any of `pids`."""
    if not pids:
        return {}
    rows = db.scalars(select(Evaluation).where(Evaluation.pid.in_(pids),
                                               Evaluation.status.in_(EVALUATION_ACTIVE)))
    return {row.pid: row for row in rows if row.pid is not None}


def log_tail(subject: Subject) -> str:
    """The last lines the Aim process wrote."""
    try:
        lines = subject.log.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def subject_of(db: Session, row: Evaluation) -> Subject:
    """The subject a row belongs to."""
    if row.training_id is not None:
        return sources.training_subject(row.training_id)
    repo = db.get(Repository, row.repo_id)
    if repo is None:
        raise NotFound(f"repository {row.repo_id} not found")
    return sources.repo_subject(repo)


def _compare_sources(db: Session, repo: Repository) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    trainings = db.scalars(select(Training).where(Training.repo_id == repo.id)
                           .order_by(Training.id))
    for training in trainings:
        if not training.state.finished:
            continue
        custom = get_row(db, sources.training_subject(training.id))
        aim_path = custom.aim_path if custom is not None and custom.type == "custom" else None
        folder = sources.find_aim_repo(training, aim_path)
        if folder is not None:
            found.append(sources.aim_source(training, folder))
        elif sources.log_has_metrics(training):
            found.append(sources.log_source(training))
    return found


@dataclass(frozen=True)
class Plan:
    """What to serve: the training's folder holding `.aim` (custom) or how to build one
    (standard, comparison), and the custom path in canonical form (relative to the
    workspace root)."""

    folder: str | None
    build: dict[str, Any] | None
    aim_path: str | None = None


def plan_for(db: Session, subject: Subject, *, kind: str, aim_path: str | None) -> Plan:
    """The folder the Aim UI serves and, unless it is the training's own, how to build it."""
    if subject.kind == "repo":
        repo = db.get(Repository, subject.id)
        if repo is None:
            raise NotFound(f"repository {subject.id} not found")
        found = _compare_sources(db, repo)
        if not found:
            raise Conflict(f"{repo.full_name} has no finished training with metrics (an Aim "
                           "repository or LossMonitor/accuracy lines in its log) to compare",
                           code="no_metrics")
        return Plan(None, sources.build_spec(found, experiment=repo.full_name))
    training = db.get(Training, subject.id)
    if training is None:
        raise NotFound(f"training {subject.id} not found")
    if kind == "custom":
        folder = sources.resolve_aim_path(training, aim_path or "")
        workspace = storage.training_workspace(training.id).resolve()
        relative = folder.relative_to(workspace).as_posix()
        return Plan(str(folder), None, "./" if relative == "." else relative + "/")
    if not sources.log_has_metrics(training):
        raise Conflict(f"the log of training {training.id} has no LossMonitor-style or "
                       "accuracy lines (e.g. 'Epoch:[1/30], step:[10/390], loss:[2.301/2.305]')"
                       " to build a standard evaluation from", code="no_metrics")
    return Plan(None, sources.build_spec([sources.log_source(training)],
                                         experiment=training.repo.full_name))


def is_built(row: Evaluation, build: dict[str, Any] | None) -> bool:
    """True unless the row's process was given an older build than `build` (sources changed)."""
    if build is None:
        return True
    if row.socket is None:
        return False
    try:
        given = json.loads((box_of(row.socket) / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(given == build["fingerprint"])
