"""The workers table from a worker's side: register at start, beat, and sign off."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Worker
from app.models.base import utcnow
from app.procs.tree import pid_runs


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


class NameInUse(Exception):
    """Another live worker holds the name this worker was started with."""

    def __init__(self, name: str, *, host: str, pid: int, last_heartbeat_at: datetime) -> None:
        age = (utcnow() - last_heartbeat_at).total_seconds()
        super().__init__(
            f"worker name {name} is in use by a live worker on host {host} (pid {pid}, last "
            f"heartbeat {last_heartbeat_at:%Y-%m-%d %H:%M:%S} UTC, {age:.0f} s ago): start this "
            "worker with another --name, or stop that one first")
        self.name, self.host, self.pid = name, host, pid


def holder_alive(row: Worker, *, host: str, pid: int) -> bool:
    """Whether the worker recorded in `row` may still run, as seen by process `pid` on `host`.

    A clean stop or a heartbeat older than `TRAINYARD_WORKER_LOST_AFTER_S` means gone. On this
    host the pid decides: it is this process's own (an earlier life of the same container or
    pid namespace), or it no longer runs, or it was started after the row's last heartbeat
    (the pid was reused): gone. On another host a fresh heartbeat is all there is to go by.
    """
    if row.stopped_at is not None:
        return False
    age = (utcnow() - row.last_heartbeat_at).total_seconds()
    if age > get_settings().worker_lost_after_s:
        return False
    if row.host != host:
        return True
    return row.pid != pid and pid_runs(row.pid,
                                       started_by=row.last_heartbeat_at.timestamp() + 1.0)


def claim_name(name: str, *, host: str | None = None, pid: int | None = None) -> None:
    """Take the workers row of `name` for this process before the worker consumes anything;
    raise `NameInUse` when a live worker holds it (so two workers never share a name, and
    a start never ends another worker's trainings as lost).

    The take-over is a conditional update on what was read, so of two workers starting under
    one name at the same moment only one wins."""
    host, pid = host or socket.gethostname(), pid or os.getpid()
    for _ in range(5):
        now = utcnow()
        with get_sessionmaker()() as db:
            row = db.get(Worker, name)
            if row is None:
                db.add(Worker(name=name, host=host, pid=pid, queues=[], slots=0,
                              version=trainyard_version(), started_at=now,
                              last_heartbeat_at=now))
                try:
                    db.commit()
                    return
                except IntegrityError:  # another worker inserted it first: look again
                    db.rollback()
                    continue
            if holder_alive(row, host=host, pid=pid):
                raise NameInUse(name, host=row.host, pid=row.pid,
                                last_heartbeat_at=row.last_heartbeat_at)
            done = db.execute(update(Worker).where(
                Worker.name == name, Worker.host == row.host, Worker.pid == row.pid,
                Worker.last_heartbeat_at == row.last_heartbeat_at)
                .values(host=host, pid=pid, started_at=now, last_heartbeat_at=now,
                        stopped_at=None))
            db.commit()
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return
    raise RuntimeError(f"could not take the workers row of {name}: it kept changing")


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
    """Write this worker's heartbeat (registering again if its row was removed; `NameInUse`
    when another live worker has taken the name meanwhile)."""
    with get_sessionmaker()() as db:
        done = db.execute(update(Worker).where(Worker.name == me.name, Worker.host == me.host,
                                               Worker.pid == me.pid)
                          .values(last_heartbeat_at=utcnow(), stopped_at=None))
        db.commit()
    if done.rowcount == 0:  # type: ignore[attr-defined]
        # The row is gone, or it was taken while this worker looked lost (it could not beat):
        # take it again only if its holder is gone too.
        claim_name(me.name, host=me.host, pid=me.pid)
        register(me)


def sign_off(me: WorkerIdentity) -> None:
    """Record a clean stop, so the worker shows as offline at once."""
    with get_sessionmaker()() as db:
        db.execute(update(Worker).where(Worker.name == me.name, Worker.pid == me.pid)
                   .values(stopped_at=utcnow()))
        db.commit()
