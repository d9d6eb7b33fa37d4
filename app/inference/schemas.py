"""Request and response shapes of the inference and publish API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, Field

from app.inference.images import MAX_IMAGE_BYTES


class PredictForm(BaseModel):
    """An image to classify (multipart/form-data)."""

    file: UploadFile = Field(description="A JPEG, PNG, WebP, GIF or BMP image of any size up "
                             f"to {MAX_IMAGE_BYTES} bytes.")
    checkpoint: str | None = Field(default=None, description="A checkpoint path or file name "
                                   "from the training's outputs; default: best.ckpt, else the "
                                   "newest.")


class LabelProbability(BaseModel):
    label: str
    probability: float


class CheckpointPublic(BaseModel):
    path: str = Field(description="Path inside the training's workspace, as in its outputs.")
    name: str
    size: int
    modified_at: datetime
    default: bool = False


class Timing(BaseModel):
    total_ms: float = Field(description="Time spent in the API for this request.")
    decode_ms: float
    queue_ms: float = Field(description="Time the image waited for the model.")
    forward_ms: float = Field(description="The model call (for the whole batch).")
    batch_size: int = Field(description="Images predicted together with this one.")
    cold_start_s: float | None = Field(None, description="Set when this request had to start "
                                       "the predictor.")


class PredictionPublic(BaseModel):
    training_id: int
    checkpoint: CheckpointPublic
    predictions: list[LabelProbability] = Field(description="Every class, most likely first.")
    timing: Timing
    image: dict[str, Any]


class PredictorPublic(BaseModel):
    checkpoint: str
    pid: int | None = Field(description="Its reaper shim's pid on `host` (none while spawning).")
    host: str = Field(description="The host that runs it (only API processes there use it).")
    ready: bool = Field(description="Loaded and answering.")
    warm: bool = Field(description="Every batch shape compiled (it does so while idle).")
    idle_s: float
    load_s: float | None


class WarmUpRequest(BaseModel):
    checkpoint: str | None = Field(None, description="A checkpoint path or file name; the "
                                   "default when omitted.")


class WarmUpPublic(BaseModel):
    status: str = Field(description="`ready` (already running) or `starting`.")
    checkpoint: CheckpointPublic


class InferencePublic(BaseModel):
    training_id: int
    training_status: str
    available: bool
    problem: str | None = Field(None, description="Why the training cannot predict.")
    problem_code: str | None = Field(None, description="The error code a prediction would get.")
    checkpoints: list[CheckpointPublic]
    predictors: list[PredictorPublic]


class PublishRequest(BaseModel):
    name: str = Field(description="The model's name: it becomes models/<you>/<name>/.")
    checkpoint: str | None = Field(None, description="A checkpoint path or file name; the "
                                   "default (best.ckpt, else the newest) when omitted.")
    description: str = Field("", max_length=200)
    is_public: bool | None = Field(None, description="Everyone may use the model (true) or "
                                   "only you (false, the default; an admin's are public).")
