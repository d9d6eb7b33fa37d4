"""Inference over REST: predict an image with a finished training, publish its checkpoint."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import storage
from app.auth.deps import CurrentUser
from app.datasets.schemas import ModelPublic
from app.datasets.service import model_public
from app.db import SessionDep, transaction
from app.errors import Invalid, TooLarge
from app.inference import service
from app.inference.images import FIELD, MAX_IMAGE_BYTES, DecodedImage
from app.inference.schemas import (
    InferencePublic,
    PredictionPublic,
    PredictorPublic,
    PublishRequest,
    WarmUpPublic,
    WarmUpRequest,
)
from app.models import Training
from app.params import TrainingId
from app.trainings.service import get_training
from app.uploads import is_multipart

api = APIRouter(prefix="/api/v1", tags=["inference"])

_MULTIPART_SLACK = 64 * 1024
_PREDICT_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": [FIELD],
        "properties": {
            FIELD: {"type": "string", "format": "binary",
                    "description": "A JPEG, PNG, WebP, GIF or BMP image of any size up to "
                                   f"{MAX_IMAGE_BYTES} bytes."},
            "checkpoint": {"type": "string", "description": "A checkpoint path or file name "
                           "from the training's outputs; default: best.ckpt, else the newest."},
        }}}}}}


async def _read_upload(request: Request) -> tuple[bytes, str | None]:
    if not is_multipart(request):
        raise Invalid(f"send the image as multipart/form-data in the field '{FIELD}'",
                      fields=[{"field": FIELD, "message": "required file"}])
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_IMAGE_BYTES + _MULTIPART_SLACK:
        raise TooLarge(f"{FIELD}: the upload has {length} bytes; the limit is "
                       f"{MAX_IMAGE_BYTES} bytes per image")
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise Invalid(f"{FIELD}: required file field",
                          fields=[{"field": FIELD, "message": "required file"}])
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        checkpoint = form.get("checkpoint")
    return data, checkpoint if isinstance(checkpoint, str) and checkpoint.strip() else None


@api.post("/trainings/{training_id}/predict", response_model=PredictionPublic,
          openapi_extra=_PREDICT_BODY)
async def predict(training_id: TrainingId, request: Request, db: SessionDep,
                  user: CurrentUser) -> PredictionPublic:
    """Predict the class of an uploaded image with a Completed training's checkpoint."""
    started = time.perf_counter()
    data, checkpoint_name = await _read_upload(request)

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
    for p in manager.running(training.id):
        info = await manager.health(p)
        predictors.append(PredictorPublic(
            checkpoint=p.spec.checkpoint.name, pid=p.proc.pid, ready=bool(info),
            warm=bool(info) and not info.get("pending_batch_sizes"),
            idle_s=round(time.monotonic() - p.last_used, 3), load_s=info.get("load_s")))
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
    status = service.get_manager().warm_up(service.predictor_spec(training, checkpoint))
    return WarmUpPublic(status=status, checkpoint=checkpoint.public())


@api.delete("/trainings/{training_id}/inference", status_code=204)
async def stop_inference(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> Response:
    """Stop the training's predictors now (the next prediction starts one again)."""
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
