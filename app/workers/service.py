"""What the workers are doing: liveness, queues and the place of a waiting training."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.broker import queue_depths, queued_training_ids
from app.config import get_settings
from app.models import Training, TrainingStatus, Worker
from app.models.base import utcnow
from app.trainings.runtimes import list_flavors
from app.workers.schemas import InstanceTypeStatus, QueueWaiting, WorkerPublic, WorkersOverview

BUSY = (TrainingStatus.CREATING, TrainingStatus.RUNNING, TrainingStatus.TERMINATING)


def is_online(worker: Worker, *, now: datetime) -> bool:
    """A worker is online while it has not stopped and its heartbeat is within the bound."""
    age = (now - worker.last_heartbeat_at).total_seconds()
    return worker.stopped_at is None and age <= get_settings().worker_lost_after_s


def _running_by_worker(db: Session) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tid, name in db.execute(select(Training.id, Training.worker)
                                .where(Training.status.in_(BUSY)).order_by(Training.id)):
        out.setdefault(name or "", []).append(tid)
    return out


def _to_public(worker: Worker, *, now: datetime, running: list[int]) -> WorkerPublic:
    return WorkerPublic(
        name=worker.name, host=worker.host, pid=worker.pid, queues=list(worker.queues),
        slots=worker.slots, version=worker.version, started_at=worker.started_at,
        last_heartbeat_at=worker.last_heartbeat_at,
        heartbeat_age_s=round((now - worker.last_heartbeat_at).total_seconds(), 1),
        online=is_online(worker, now=now), stopped_at=worker.stopped_at, running=running)


def overview(db: Session, *, detailed: bool) -> WorkersOverview:
    """Queues and online workers per instance type; every worker's fields when `detailed`."""
    now = utcnow()
    workers = list(db.scalars(select(Worker).order_by(Worker.name)))
    running = _running_by_worker(db)
    online = [w for w in workers if is_online(w, now=now)]
    pending = Counter({q: n for q, n in db.execute(
        select(Training.queue, func.count()).where(Training.status == TrainingStatus.PENDING)
        .group_by(Training.queue)).tuples()})
    flavors = list_flavors()
    depths = queue_depths(sorted({f.queue for f in flavors}))
    types = []
    for flavor in flavors:
        serving = [w for w in online if flavor.queue in w.queues]
        types.append(InstanceTypeStatus(
            flavor=flavor.name, queue=flavor.queue, queue_depth=depths[flavor.queue],
            pending=pending[flavor.queue], online_workers=len(serving),
            slots=sum(w.slots for w in serving),
            busy_slots=sum(len(running.get(w.name, [])) for w in serving)))
    return WorkersOverview(
        instance_types=types, redis_reachable=None not in depths.values(),
        lost_after_s=get_settings().worker_lost_after_s,
        workers=[_to_public(w, now=now, running=running.get(w.name, [])) for w in workers]
        if detailed else None)


def online_workers_for(db: Session, queue: str) -> int:
    """How many online workers consume `queue`."""
    now = utcnow()
    return sum(1 for w in db.scalars(select(Worker))
               if is_online(w, now=now) and queue in w.queues)


def queue_note(training: Training) -> str | None:
    """Why a Pending training is not in the queue yet (the outbox), if it is not."""
    if training.state is TrainingStatus.PENDING and training.dispatch_error:
        return (f"waiting for the queue: {training.dispatch_error}; it is sent as soon as "
                "Redis is back")
    return None


def _waiting_ids(db: Session, queued: list[int]) -> list[int]:
    # Messages of trainings that are no longer Pending (terminated while queued, duplicates
    # of a claimed one) are skipped by workers: they do not count as places ahead.
    pending = set(db.scalars(select(Training.id).where(
        Training.id.in_(queued), Training.status == TrainingStatus.PENDING)))
    return list(dict.fromkeys(tid for tid in queued if tid in pending))


def waiting(db: Session, training: Training) -> QueueWaiting | None:
    """Where a Pending training stands: queue position, depth, and the workers serving it."""
    if training.state is not TrainingStatus.PENDING:
        return None
    position = depth = None
    try:
        ids = _waiting_ids(db, queued_training_ids(training.queue))
        depth = len(ids)
        position = ids.index(training.id) + 1 if training.id in ids else None
    except redis.RedisError:
        pass
    online = online_workers_for(db, training.queue)
    note = queue_note(training)
    if note is None and online == 0:
        note = (f"no online worker serves instance type {training.flavor} (queue "
                f"{training.queue}); it starts when one comes up")
    return QueueWaiting(queue=training.queue, position=position, queue_depth=depth,
                        online_workers=online, note=note)
