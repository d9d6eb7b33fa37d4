"""Request and response shapes of the training API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.workers.schemas import QueueWaiting


class ConfigPathCreate(BaseModel):
    """Create a training from a config file of the repository."""

    model_config = ConfigDict(extra="forbid")

    config_path: str = Field(description="A config.json-like file of the repository.",
                             examples=["train/config.json"])
    job_name: str | None = Field(default=None, description="Replaces the file's job_name "
                                 "for this run.")


# The body is read by the route, not by FastAPI: it may be pasted config.json text, with //
# comments and trailing commas (JSONC), which no JSON parser takes. The config object itself
# is left open here: its own schema (GET /api/v1/schemas/training-config) cannot say that
# null means "the default", which the config format accepts, so it would misstate the body.
CREATE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"anyOf": [
        {"type": "object", "title": "TrainingConfig",
         "description": "The config.json object itself: see GET "
                        "/api/v1/schemas/training-config."},
        ConfigPathCreate.model_json_schema()]}}}}}


class TrainingPublic(BaseModel):
    id: int
    repo: str
    job_name: str
    job_description: str
    status: str
    finished: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error: str | None
    exit_code: int | None
    runtime: str
    flavor: str
    worker: str | None
    config: dict[str, Any]
    created_by: str | None = None
    queue_note: str | None = None
    waiting: QueueWaiting | None = None


class OutputFile(BaseModel):
    path: str
    output: str
    size: int
    modified_at: datetime
    checkpoint: bool
    refused: str | None = Field(default=None, description="Why the entry is listed but not "
                                "served: a link or special file the run planted.")


class Accepted(BaseModel):
    id: int
    status: str
