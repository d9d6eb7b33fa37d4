"""Inference on a finished training: pick its checkpoint, run its `inference/app.py`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import safe_files, storage
from app.config import get_settings
from app.datasets.service import default_visibility
from app.errors import Conflict, Invalid
from app.inference.images import DecodedImage, decode_image
from app.inference.manager import PredictorManager, PredictorSpec
from app.inference.schemas import (
    CheckpointPublic,
    LabelProbability,
    PredictionPublic,
    Timing,
)
from app.models import Model, Training, TrainingStatus, User
from app.names import check_name
from app.procs import services
from app.trainings import outputs
from app.trainings.runtimes import get_runtime

APP_PATH = "inference/app.py"
BEST_CHECKPOINT = "best.ckpt"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file among a training's outputs."""

    path: str  # relative to the workspace, as the outputs API lists it
    file: Path
    size: int
    modified_at: datetime
    is_default: bool = False

    def public(self) -> CheckpointPublic:
        """The API view."""
        return CheckpointPublic(path=self.path, name=self.file.name, size=self.size,
                                modified_at=self.modified_at, default=self.is_default)


@lru_cache
def get_manager() -> PredictorManager:
    """The predictor manager of this API process."""
    settings = get_settings()
    return PredictorManager(max_predictors=settings.max_predictors,
                            idle_s=settings.inference_idle_s)


@asynccontextmanager
async def predictors_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Application lifespan: drop the boxes of dead API processes, run the upkeep, stop every
    predictor this process started when the API shuts down."""
    await asyncio.to_thread(services.remove_orphan_boxes, storage.runtime_dir("predictors"))
    get_manager().start()
    try:
        yield
    finally:
        await get_manager().shutdown()


async def stop_detached_predictors() -> int:
    """Stop the predictors whose training was deleted (call after the delete's commit)."""
    return await get_manager().launcher.stop_detached()


def list_checkpoints(training: Training) -> list[Checkpoint]:
    """The training's checkpoint outputs, newest first."""
    workspace = storage.training_workspace(training.id)
    found = sorted((Checkpoint(path=f.path, file=workspace / f.path, size=f.size,
                               modified_at=f.modified_at)
                    for f in outputs.list_outputs(training) if f.checkpoint),
                   key=lambda c: (c.modified_at, c.path), reverse=True)
    default = default_checkpoint(found)
    return [dataclasses.replace(c, is_default=True) if c is default else c for c in found]


def default_checkpoint(found: list[Checkpoint]) -> Checkpoint | None:
    """`best.ckpt` (the newest one if several), else the newest checkpoint."""
    best = [c for c in found if c.file.name == BEST_CHECKPOINT]
    candidates = best or found
    return candidates[0] if candidates else None


def choose_checkpoint(training: Training, name: str | None) -> Checkpoint:
    """The checkpoint to predict with: the named one (path or file name) or the default."""
    found = list_checkpoints(training)
    if not found:
        raise Conflict(f"training {training.id} wrote no checkpoint (*.ckpt) to its outputs, "
                       "so there is nothing to predict with", code="no_checkpoint")
    if not name:
        return next(c for c in found if c.is_default)
    wanted = name.strip().strip("/")
    matches = [c for c in found if c.path == wanted] or [c for c in found
                                                         if c.file.name == wanted]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(c.path for c in found[:20])
    why = "is ambiguous" if matches else "is not among its checkpoints"
    message = f"'{name}' {why}; training {training.id} has: {listed}"
    raise Invalid(f"checkpoint: {message}", fields=[{"field": "checkpoint", "message": message}])


def inference_problem(training: Training) -> tuple[str, str] | None:
    """(error code, message) saying why the training cannot predict, or None when it can."""
    if training.state is not TrainingStatus.COMPLETED:
        return ("training_not_completed",
                f"training {training.id} is {training.status}; only a Completed training "
                "can predict")
    try:  # the run could have replaced its code's app with a link: never follow it
        info: os.stat_result | None = safe_files.lstat_at(
            storage.training_workspace(training.id), APP_PATH, field="inference")
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except safe_files.UnsafePath as exc:
        return ("unsafe_path", exc.detail)
    why = safe_files.refusal(info) if info is not None else None
    if why is not None:
        return ("unsafe_path", f"inference: '{APP_PATH}' {why}; Trainyard does not follow links "
                "a run may have planted")
    if info is None or not stat.S_ISREG(info.st_mode):
        return ("no_inference_app",
                f"the code of training {training.id} has no {APP_PATH}: add one to the "
                "repository (the sample's shows the interface) and train again")
    return None


def require_predictable(training: Training) -> None:
    """409 unless the training is Completed and its code snapshot has `inference/app.py`."""
    problem = inference_problem(training)
    if problem is not None:
        raise Conflict(problem[1], code=problem[0])


def predictor_spec(training: Training, checkpoint: Checkpoint) -> PredictorSpec:
    """How to start the predictor of this training and checkpoint."""
    runtime = get_runtime(training.runtime)
    folder = storage.training_dir(training.id)
    return PredictorSpec(
        training_id=training.id, app_path=storage.training_workspace(training.id) / APP_PATH,
        checkpoint=checkpoint.file, base_python=runtime.python, home=folder / "home",
        log_path=folder / "predictor.log", envs_cache=storage.envs_dir(),
        runtime_dir=storage.runtime_dir("predictors"),
        is_mindspore=runtime.framework_type == "MindSpore")


def sorted_predictions(scores: dict[str, float]) -> list[LabelProbability]:
    """Every label with its probability, most likely first (ties by label)."""
    return [LabelProbability(label=label, probability=prob)
            for label, prob in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


async def predict(training: Training, checkpoint: Checkpoint, image: DecodedImage, *,
                  started: float, decode_ms: float) -> PredictionPublic:
    """Run a decoded image through the training's predictor."""
    result = await get_manager().predict(predictor_spec(training, checkpoint),
                                         width=image.width, height=image.height, rgb=image.rgb)
    timing = Timing(total_ms=round((time.perf_counter() - started) * 1000, 3),
                    decode_ms=round(decode_ms, 3), queue_ms=result.queue_ms,
                    forward_ms=result.forward_ms, batch_size=result.batch_size,
                    cold_start_s=result.cold_start_s)
    return PredictionPublic(
        training_id=training.id, checkpoint=checkpoint.public(),
        predictions=sorted_predictions(result.scores), timing=timing,
        image={"format": image.format, "width": image.original_width,
               "height": image.original_height})


def decode_timed(data: bytes) -> tuple[DecodedImage, float]:
    """Decode an upload; also how long it took in milliseconds."""
    began = time.perf_counter()
    image = decode_image(data)
    return image, (time.perf_counter() - began) * 1000


def publish_checkpoint(db: Session, *, training: Training, user: User, name: str,
                       checkpoint: str | None, description: str = "",
                       is_public: bool | None = None) -> Model:
    """Register a checkpoint of a Completed training as `models/<user>/<name>/best.ckpt`.

    The row is flushed first, so the unique (owner, name) is claimed under the database's lock
    before any file moves and a concurrent publish of the same name gets a 409, never a
    half-written folder; then the file is copied to a staging folder renamed into place. The
    caller commits and, if the commit fails, removes the model's folder.
    """
    check_name(name, what="model")
    if training.state is not TrainingStatus.COMPLETED:
        raise Conflict(f"training {training.id} is {training.status}; only a Completed "
                       "training's checkpoint can be published", code="training_not_completed")
    chosen = choose_checkpoint(training, checkpoint)
    # The copy reads the descriptor that was checked: a link swapped in later is not followed.
    fd, info = safe_files.open_file(storage.training_workspace(training.id), chosen.path,
                                    field="checkpoint")
    try:
        return _publish_open(db, training=training, user=user, name=name, chosen=chosen,
                             fd=fd, size=info.st_size, description=description,
                             is_public=is_public)
    finally:
        os.close(fd)


def _publish_open(db: Session, *, training: Training, user: User, name: str, chosen: Checkpoint,
                  fd: int, size: int, description: str, is_public: bool | None) -> Model:
    duplicate = Conflict(f"model '{user.username}/{name}' already exists; choose another name "
                         f"or delete it (`trainyard models delete {user.username}/{name}`)",
                         code="duplicate_model")
    if db.scalar(select(Model.id).where(Model.owner_id == user.id, Model.name == name)):
        raise duplicate
    model = Model(owner_id=user.id, name=name, description=description,
                  is_public=default_visibility(user, is_public), source_training_id=training.id,
                  size_bytes=size,
                  info={"files": [BEST_CHECKPOINT],
                        "source": {"training_id": training.id, "repo": training.repo.full_name,
                                   "job_name": training.job_name, "checkpoint": chosen.path}})
    db.add(model)
    try:
        db.flush()
    except IntegrityError as exc:  # a concurrent publish won; the caller's rollback ends ours
        raise duplicate from exc
    dest = storage.model_dir(user.username, name)
    stage = storage.staging_dir("model-")
    try:
        safe_files.copy_out(os.dup(fd), stage / BEST_CHECKPOINT)
        storage.remove_tree(dest)  # left by a publish whose commit failed: no row owns it
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(dest)
    except BaseException:
        storage.remove_tree(stage)
        raise
    return model
