"""Training instances: create under the per-repo rules, list, terminate, delete."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.db import Cleanup
from app.errors import Conflict, Invalid, NotFound
from app.models import UNFINISHED, Dataset, Model, Repository, Training, TrainingStatus, User
from app.models.base import utcnow
from app.repos.service import can_read, read_file, require_write
from app.trainings.config import (
    TrainingConfig,
    config_invalid,
    parse_config_text,
    validate_config,
)
from app.trainings.config_rules import parse_input_url
from app.trainings.schemas import TrainingPublic
from app.workers.service import queue_note

_OTHER_NAME = ("give this one another job_name (in the config, or \"job_name\" next to "
               "\"config_path\"; `trainyard submit --name NAME`)")


def load_config_data(repo: Repository, body: Any) -> Any:
    """The config data of a creation request: the object itself or `{"config_path": ...}`.

    With `config_path`, an optional `job_name` replaces the file's own job name.
    """
    if isinstance(body, dict) and "config_path" in body:
        if not set(body) <= {"config_path", "job_name"} or not all(
                isinstance(v, str) for v in body.values()):
            raise Invalid("config_path: send either the config object or "
                          "{\"config_path\": \"<file in the repo>\"} (with an optional "
                          "\"job_name\")",
                          fields=[{"field": "config_path",
                                   "message": "only job_name may come with it; both strings"}])
        path = read_file(repo, body["config_path"])
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid(f"config_path: {body['config_path']} is not UTF-8 text",
                          fields=[{"field": "config_path", "message": "not text"}]) from exc
        parsed = parse_config_text(text)
        if "job_name" in body and isinstance(parsed, dict):
            parsed["job_name"] = body["job_name"]
        body = parsed
    return body


def _code_problems(repo: Repository, data: dict[str, Any], bad: set[str]
                   ) -> list[dict[str, Any]]:
    code_dir, boot_file = data.get("code_dir") or "", data.get("boot_file")
    if bad & {"code_dir", "boot_file"} or not isinstance(code_dir, str) \
            or not isinstance(boot_file, str):
        return []  # the schema's own message covers it; the path may not be safe to look up
    if code_dir and not code_dir.endswith("/"):
        code_dir += "/"  # as the schema normalises it
    if boot_file.startswith(code_dir) and len(boot_file) > len(code_dir):
        boot_file = boot_file[len(code_dir):]
    boot = code_dir + boot_file
    if (storage.repo_dir(repo.owner.username, repo.name) / boot).is_file():
        return []
    return [{"field": "boot_file", "message": f"{boot} does not exist in {repo.full_name}"}]


def _input_problems(db: Session, user: User, data: dict[str, Any], bad: set[str]
                    ) -> list[dict[str, Any]]:
    inputs = data.get("inputs")
    problems = []
    for i, item in enumerate(inputs if isinstance(inputs, list) else []):
        field = f"inputs[{i}].input_url"
        if field in bad or not isinstance(item, dict) or not isinstance(
                item.get("input_url"), str):
            continue
        try:
            ref = parse_input_url(item["input_url"])
        except Invalid:
            continue
        row: Dataset | Model | None
        if ref.kind == "datasets":
            row = db.scalar(select(Dataset).join(User, Dataset.owner_id == User.id)
                            .where(User.username == ref.owner, Dataset.name == ref.name))
        else:
            row = db.scalar(select(Model).join(User, Model.owner_id == User.id)
                            .where(User.username == ref.owner, Model.name == ref.name))
        label = f"{ref.kind}/{ref.owner}/{ref.name}"
        if row is None or not (row.is_public or row.owner_id == user.id or user.is_admin):
            # The same words either way: a private input's existence is not revealed.
            problems.append({"field": field,
                             "message": f"{label} does not exist or is not yours"})
            continue
        root = (storage.dataset_dir if ref.kind == "datasets" else storage.model_dir)(
            ref.owner, ref.name)
        if ref.subpath and not (root / ref.subpath).exists():
            problems.append({"field": field,
                             "message": f"{label} has no file or folder '{ref.subpath}'"})
    return problems


def check_config(db: Session, *, repo: Repository, user: User, body: Any) -> TrainingConfig:
    """Validate a config with its boot file and inputs; one 422 lists every problem."""
    cfg: TrainingConfig | None = None
    problems: list[dict[str, Any]] = []
    data = load_config_data(repo, body)
    try:
        cfg = validate_config(data)
    except Invalid as exc:
        problems = list(exc.fields or [{"field": "config", "message": exc.detail}])
    if isinstance(data, dict):
        bad = {str(p.get("field")) for p in problems}
        problems += _code_problems(repo, data, bad) + _input_problems(db, user, data, bad)
    if problems or cfg is None:
        raise config_invalid(problems)
    return cfg


def _enforce_rules(db: Session, repo: Repository, job_name: str) -> None:
    # Taking the repo row's write lock first serialises concurrent creations in one repo.
    db.execute(update(Repository).where(Repository.id == repo.id)
               .values(training_seq=Repository.training_seq + 1))
    limit = get_settings().max_trainings_per_repo
    count = db.scalar(select(func.count()).where(Training.repo_id == repo.id)) or 0
    if count >= limit:
        raise Conflict(f"{repo.full_name} already has {count} training instances, the "
                       f"limit is {limit}: delete one to make room", code="training_limit")
    busy = db.execute(select(Training.id, Training.job_name, Training.status)
                      .where(Training.repo_id == repo.id, Training.status.in_(UNFINISHED))
                      ).first()
    if busy is not None:
        raise Conflict(f"training {busy.id} ('{busy.job_name}') of {repo.full_name} is "
                       f"{busy.status}; a repository runs one training at a time: wait for "
                       "it or terminate it", code="training_running")
    if db.scalar(select(Training.id).where(Training.repo_id == repo.id,
                                           Training.job_name == job_name)) is not None:
        raise Conflict(f"{repo.full_name} already has a training named '{job_name}'; "
                       f"{_OTHER_NAME}", code="duplicate_name")


def _conflict_from_integrity(exc: IntegrityError, repo: Repository, job_name: str) -> Conflict:
    text = str(exc.orig)
    if "job_name" in text:
        return Conflict(f"{repo.full_name} already has a training named '{job_name}'; "
                        f"{_OTHER_NAME}", code="duplicate_name")
    return Conflict(f"{repo.full_name} already has an unfinished training",
                    code="training_running")


def create_training(db: Session, *, repo: Repository, user: User, body: Any) -> Training:
    """Validate a config, apply the repo's rules and snapshot the code (the caller commits and,
    if that fails, removes the training's folder)."""
    require_write(repo, user)
    cfg = check_config(db, repo=repo, user=user, body=body)
    _enforce_rules(db, repo, cfg.job_name)
    training = Training(
        repo_id=repo.id, created_by_id=user.id, job_name=cfg.job_name,
        job_description=cfg.job_description, config=cfg.to_json(), sdk=cfg.SDK,
        code_dir=cfg.code_dir, boot_file=cfg.boot_file, runtime=cfg.runtime.name,
        flavor=cfg.flavor.name, queue=cfg.flavor.queue, status=TrainingStatus.PENDING,
        dispatched_at=utcnow())  # sent right after the commit; see record_dispatch_failure
    db.add(training)
    try:
        db.flush()
    except IntegrityError as exc:  # a concurrent creation won; the caller's rollback ends ours
        raise _conflict_from_integrity(exc, repo, cfg.job_name) from exc
    workspace = storage.training_workspace(training.id)
    storage.remove_tree(storage.training_dir(training.id))  # leftovers of a rolled-back id
    storage.copy_tree_atomic(storage.repo_dir(repo.owner.username, repo.name), workspace)
    storage.training_log(training.id).touch()
    return training


def get_training(db: Session, training_id: int, *, user: User) -> Training:
    """A training the caller may see (404 otherwise)."""
    training = db.get(Training, training_id)
    if training is None or not can_read(training.repo, user):
        raise NotFound(f"training {training_id} not found")
    return training


def list_trainings(db: Session, repo: Repository) -> list[Training]:
    """The repository's trainings, newest first."""
    return list(db.scalars(select(Training).where(Training.repo_id == repo.id)
                           .order_by(Training.id.desc())))


def request_termination(db: Session, training: Training, *, user: User) -> None:
    """Ask for a training to stop: queued ones end at once, running ones via Terminating."""
    require_write(training.repo, user)
    # Re-read under a row update so a concurrent claim by a worker is not lost.
    if training.state is TrainingStatus.PENDING:
        result = db.execute(update(Training).where(Training.id == training.id,
                                                   Training.status == TrainingStatus.PENDING)
                            .values(status=TrainingStatus.TERMINATED, finished_at=utcnow(),
                                    error="terminated before it started"))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            db.refresh(training)
            return
        db.refresh(training)
    if training.state in (TrainingStatus.CREATING, TrainingStatus.RUNNING):
        db.execute(update(Training).where(Training.id == training.id,
                                          Training.status.in_([TrainingStatus.CREATING,
                                                               TrainingStatus.RUNNING]))
                   .values(status=TrainingStatus.TERMINATING))
        db.refresh(training)
        return
    if training.state is TrainingStatus.TERMINATING:
        return
    raise Conflict(f"training {training.id} is already {training.status}",
                   code="training_finished")


def delete_training(db: Session, training: Training) -> Cleanup:
    """Delete a finished training's row; returns its files, to remove after the commit."""
    cleanup = Cleanup([storage.training_dir(training.id)])
    db.delete(training)
    db.flush()
    return cleanup


def to_public(training: Training) -> TrainingPublic:
    """The API view of a training."""
    return TrainingPublic(
        id=training.id, repo=training.repo.full_name, job_name=training.job_name,
        job_description=training.job_description, status=training.status,
        finished=training.state.finished, created_at=training.created_at,
        started_at=training.started_at, finished_at=training.finished_at,
        duration_s=training.duration_s, error=training.error, exit_code=training.exit_code,
        runtime=training.runtime, flavor=training.flavor, worker=training.worker,
        config=json.loads(json.dumps(training.config)), queue_note=queue_note(training),
        created_by=training.created_by.username if training.created_by else None)


def record_dispatch_failure(db: Session, training: Training, error: str) -> None:
    """Put a committed training that could not be queued in the outbox, with the reason."""
    db.execute(update(Training).where(Training.id == training.id,
                                      Training.status == TrainingStatus.PENDING)
               .values(dispatched_at=None, dispatch_error=error))
