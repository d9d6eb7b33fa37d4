"""Inference over REST: predict an image with a finished training, publish its checkpoint."""

from __future__ import annotations

import time
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, Response
from fastapi.concurrency import run_in_threadpool

from app import storage
from app.auth.deps import CurrentUser
from app.datasets.schemas import ModelPublic
from app.datasets.service import model_public
from app.db import SessionDep, transaction
from app.inference import service
from app.inference.images import MAX_IMAGE_BYTES, DecodedImage
from app.inference.manager import checkpoint_of
from app.inference.schemas import (
    InferencePublic,
    PredictForm,
    PredictionPublic,
    PredictorPublic,
    PublishRequest,
    WarmUpPublic,
    WarmUpRequest,
)
from app.models import ServiceState, Training
from app.models.base import utcnow
from app.params import TrainingId
from app.trainings.service import get_training
from app.uploads import CappedRoute, body_limit

api = APIRouter(prefix="/api/v1", tags=["inference"], route_class=CappedRoute)

_MULTIPART_SLACK = 64 * 1024


@api.post("/trainings/{training_id}/predict", response_model=PredictionPublic,
          openapi_extra=body_limit(MAX_IMAGE_BYTES + _MULTIPART_SLACK),
          form_limits={"max_files": 1, "max_fields": 4})
async def predict(training_id: TrainingId, form: Annotated[PredictForm, Form(
                      media_type="multipart/form-data")],
                  db: SessionDep, user: CurrentUser) -> PredictionPublic:
    """Predict the class of an uploaded image with a Completed training's checkpoint."""
    started = time.perf_counter()
    data = await form.file.read(MAX_IMAGE_BYTES + 1)
    checkpoint_name = (form.checkpoint or "").strip() or None

    def prepare() -> tuple[Training, service.Checkpoint, DecodedImage, float]:
        training = get_training(db, training_id, user=user)
        service.require_predictable(training)
        checkpoint = service.choose_checkpoint(training, checkpoint_name)
        return training, checkpoint, *service.decode_timed(data)

    training, checkpoint, image, decode_ms = await run_in_threadpool(prepare)
    return await service.predict(training, checkpoint, image, started=started,
                                 decode_ms=decode_ms)


@api.get("/trainings/{training_id}/inference", response_model=InferencePublic)
async def inference_status(training_id: TrainingId, db: SessionDep,
                           user: CurrentUser) -> InferencePublic:
    """Whether the training can predict, its checkpoints (default flagged), running predictors."""

    def read() -> tuple[Training, tuple[str, str] | None, list[service.Checkpoint]]:
        training = get_training(db, training_id, user=user)
        return training, service.inference_problem(training), service.list_checkpoints(training)

    training, problem, found = await run_in_threadpool(read)
    if problem is None and not found:
        problem = ("no_checkpoint", f"training {training.id} wrote no checkpoint (*.ckpt)")
    manager = service.get_manager()
    predictors = []
    for row in await manager.running(training.id):
        ready = row.state == ServiceState.READY
        info = await manager.health(row)
        predictors.append(PredictorPublic(
            checkpoint=PurePosixPath(checkpoint_of(row)).name, pid=row.pid, host=row.host,
            ready=ready, warm=ready and not info.get("pending_batch_sizes"),
            idle_s=round((utcnow() - row.last_used_at).total_seconds(), 3),
            load_s=info.get("load_s")))
    return InferencePublic(training_id=training.id, training_status=training.status,
                           available=problem is None,
                           problem=problem[1] if problem else None,
                           problem_code=problem[0] if problem else None,
                           checkpoints=[c.public() for c in found],
                           predictors=predictors)


@api.post("/trainings/{training_id}/inference", status_code=202, response_model=WarmUpPublic)
async def warm_up(training_id: TrainingId, db: SessionDep, user: CurrentUser,
                  body: WarmUpRequest | None = None) -> WarmUpPublic:
    """Start the predictor in the background, so that the first prediction is fast."""
    name = body.checkpoint if body else None

    def prepare() -> tuple[Training, service.Checkpoint]:
        training = get_training(db, training_id, user=user)
        service.require_predictable(training)
        return training, service.choose_checkpoint(training, name)

    training, checkpoint = await run_in_threadpool(prepare)
    status = await service.get_manager().warm_up(service.predictor_spec(training, checkpoint))
    return WarmUpPublic(status=status, checkpoint=checkpoint.public())


@api.delete("/trainings/{training_id}/inference", status_code=204)
async def stop_inference(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> Response:
    """Stop the training's predictors now, in every API process (the next prediction starts
    one again)."""
    await run_in_threadpool(get_training, db, training_id, user=user)
    await service.get_manager().stop_training(training_id)
    return Response(status_code=204)


@api.post("/trainings/{training_id}/publish", status_code=201, response_model=ModelPublic,
          tags=["models"])
def publish(training_id: TrainingId, body: PublishRequest, db: SessionDep,
            user: CurrentUser) -> ModelPublic:
    """Publish a checkpoint as the model `models/<you>/<name>/best.ckpt` (usable as an input)."""
    training = get_training(db, training_id, user=user)
    with transaction(db) as txn:
        model = service.publish_checkpoint(db, training=training, user=user, name=body.name,
                                           checkpoint=body.checkpoint,
                                           description=body.description,
                                           is_public=body.is_public)
        txn.on_rollback(storage.model_dir(user.username, body.name))
    db.refresh(model)
    return model_public(model)


router = api
