"""Evaluation rules and rows: who may start what, and the status recorded in the database.

The row is the evaluation users see: its kind, source, status and error. Its Aim process is a
`services` row of `app.launcher`. Transitions are conditional updates on (status, generation:
`created_at`, renewed by each claim), so concurrent API processes never both win; these
functions flush only, and the manager runs each in a short transaction of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    """Mark the evaluation `starting` (a new generation: `created_at`); None when another
    request got there first. Flushes only: the caller's transaction commits."""
    now = utcnow()
    values: dict[str, Any] = {"type": kind, "aim_path": aim_path,
                              "status": EvaluationStatus.STARTING, "error": None,
                              "last_used_at": now}
    if seen is None:
        row = Evaluation(training_id=subject.id if subject.kind == "training" else None,
                         repo_id=subject.id if subject.kind == "repo" else None,
                         created_at=now, **values)
        try:
            with db.begin_nested():  # a savepoint: the caller's transaction goes on
                db.add(row)
        except IntegrityError:  # the unique subject: another request inserted it
            return None
        return row
    result = db.execute(update(Evaluation).where(
        Evaluation.id == seen.id, Evaluation.status == seen.status,
        Evaluation.created_at == seen.created_at)
        .values(created_at=now, **values))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.get(Evaluation, seen.id, populate_existing=True)


def mark(db: Session, row_id: int, *, generation: datetime, status: str,
         error: str | None = None) -> bool:
    """Move an active row to `status` if it is still the generation (`created_at`) seen."""
    values: dict[str, Any] = {"status": status, "error": error}
    if status == EvaluationStatus.RUNNING:  # idle time counts from when the report is ready
        values["last_used_at"] = utcnow()
    result = db.execute(update(Evaluation).where(
        Evaluation.id == row_id, Evaluation.status.in_(EVALUATION_ACTIVE),
        Evaluation.created_at == generation).values(**values))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def touch(db: Session, row_id: int) -> None:
    """Record that the report was just used (it postpones expiry)."""
    db.execute(update(Evaluation).where(Evaluation.id == row_id).values(last_used_at=utcnow()))


def log_tail(subject: Subject) -> str:
    """The last lines the Aim process wrote."""
    try:
        lines = subject.log.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


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


def is_built(socket: str | None, build: dict[str, Any] | None) -> bool:
    """True unless the Aim UI on `socket` was given an older build than `build` (its sources
    changed)."""
    if build is None:
        return True
    if socket is None:
        return False
    try:
        given = json.loads((box_of(socket) / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(given == build["fingerprint"])
