"""The workers table from a worker's side: register at start, beat, and sign off."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import update

from app.db import get_sessionmaker
from app.models import Worker
from app.models.base import utcnow


def trainyard_version() -> str:
    """The installed Trainyard version."""
    try:
        return version("trainyard")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class WorkerIdentity:
    """What a worker tells the others about itself."""

    name: str
    queues: list[str]
    slots: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def register(me: WorkerIdentity) -> None:
    """Insert or refresh this worker's row at start (a restart under the same name reuses it)."""
    now = utcnow()
    with get_sessionmaker()() as db:
        row = db.get(Worker, me.name) or Worker(name=me.name)
        row.host, row.pid, row.queues, row.slots = me.host, me.pid, list(me.queues), me.slots
        row.version, row.started_at, row.last_heartbeat_at = trainyard_version(), now, now
        row.stopped_at = None
        db.add(row)
        db.commit()


def beat(me: WorkerIdentity) -> None:
    """Write this worker's heartbeat (registering again if its row was removed)."""
    with get_sessionmaker()() as db:
        done = db.execute(update(Worker).where(Worker.name == me.name)
                          .values(last_heartbeat_at=utcnow(), pid=me.pid, stopped_at=None))
        db.commit()
    if done.rowcount == 0:  # type: ignore[attr-defined]
        register(me)


def sign_off(me: WorkerIdentity) -> None:
    """Record a clean stop, so the worker shows as offline at once."""
    with get_sessionmaker()() as db:
        db.execute(update(Worker).where(Worker.name == me.name, Worker.pid == me.pid)
                   .values(stopped_at=utcnow()))
        db.commit()
