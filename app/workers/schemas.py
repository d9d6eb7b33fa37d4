"""Response shapes of the workers API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WorkerPublic(BaseModel):
    name: str
    host: str
    pid: int
    queues: list[str]
    slots: int
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    online: bool
    stopped_at: datetime | None
    running: list[int]


class InstanceTypeStatus(BaseModel):
    flavor: str
    queue: str
    queue_depth: int | None
    pending: int
    online_workers: int
    slots: int
    busy_slots: int


class WorkersOverview(BaseModel):
    instance_types: list[InstanceTypeStatus]
    workers: list[WorkerPublic] | None = None
    redis_reachable: bool
    lost_after_s: float


class QueueWaiting(BaseModel):
    queue: str
    position: int | None
    queue_depth: int | None
    online_workers: int
    note: str | None
