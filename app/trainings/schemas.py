"""Response shapes of the training API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.workers.schemas import QueueWaiting


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
