"""The `services` rows: claim, record, mark, touch and find them (functions flush only).

Every transition is a conditional update on (id, state, pid), so API processes racing on one
row never both win. `transact` runs one of these functions in its own short transaction, off
the event loop: the launcher's work is background work, not a request's.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db import get_sessionmaker
from app.models import SERVICE_LIVE, Service, ServiceState
from app.models.base import utcnow
from app.procs.tree import pid_runs

T = TypeVar("T")

HOST = socket.gethostname()
STALE_CLAIM_S = 30.0  # a row claimed this long ago without a pid lost its starter
# A row unused for twice its kind's idle time plus this is abandoned (see `abandoned`).
ABANDONED_MARGIN_S = 120.0


@dataclass(frozen=True)
class ServiceRef:
    """What a row said when it was read (detached from any session)."""

    id: int
    kind: str
    owner_key: str
    training_id: int | None
    repo_id: int | None
    host: str
    socket: str | None
    pid: int | None
    state: str
    error: str | None
    started_at: datetime
    last_used_at: datetime
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def here(self) -> bool:
        """True when the process runs on this host (its socket is reachable from here)."""
        return self.host == HOST

    @property
    def detached(self) -> bool:
        """True when its training or repository was deleted."""
        return self.training_id is None and self.repo_id is None


def ref(row: Service) -> ServiceRef:
    """A detached copy of a row."""
    return ServiceRef(id=row.id, kind=row.kind, owner_key=row.owner_key,
                      training_id=row.training_id, repo_id=row.repo_id, host=row.host,
                      socket=row.socket, pid=row.pid, state=row.state, error=row.error,
                      started_at=row.started_at, last_used_at=row.last_used_at,
                      info=dict(row.info or {}))


async def transact(fn: Callable[..., T], *args: Any,
                   sessions: sessionmaker[Session] | None = None, **kwargs: Any) -> T:
    """Run `fn(db, ...)` in a short transaction of its own, in a worker thread, and commit."""
    def call() -> T:
        with (sessions or get_sessionmaker())() as db:
            result = fn(db, *args, **kwargs)
            db.commit()
            return result
    return await run_in_threadpool(call)


def process_alive(pid: int | None, *, since: datetime | None = None) -> bool:
    """True when `pid` runs on this host (not a zombie) and was started before `since` (a
    recycled pid started later is not the recorded process)."""
    if pid is None:
        return False
    return pid_runs(pid, started_by=None if since is None else since.timestamp() + 1.0)


def is_gone(row: ServiceRef) -> bool:
    """True when the row's process is known to be gone: its pid does not run on this host, or
    it was claimed long ago and never got a pid. Rows of other hosts are never gone from here."""
    if not row.here:
        return False
    if row.pid is None:
        return (utcnow() - row.started_at).total_seconds() > STALE_CLAIM_S
    return not process_alive(row.pid, since=row.started_at)


def get(db: Session, kind: str, owner_key: str) -> ServiceRef | None:
    """The row of (kind, owner), if any."""
    row = db.scalar(select(Service).where(Service.kind == kind, Service.owner_key == owner_key))
    return ref(row) if row is not None else None


def claim(db: Session, kind: str, owner_key: str, *, training_id: int | None,
          repo_id: int | None, seen: ServiceRef | None) -> ServiceRef | None:
    """Claim the owner's row as `starting` on this host: insert it when `seen` is None, else
    take over `seen` if it is unchanged. None when another process won."""
    now = utcnow()
    values: dict[str, Any] = {"host": HOST, "socket": None, "pid": None, "info": {},
                              "state": ServiceState.STARTING, "error": None, "started_at": now,
                              "last_used_at": now, "training_id": training_id,
                              "repo_id": repo_id}
    if seen is None:
        row = Service(kind=kind, owner_key=owner_key, **values)
        try:
            with db.begin_nested():  # a savepoint: the caller's transaction goes on
                db.add(row)
        except IntegrityError:  # the unique (kind, owner_key): another process claimed it
            return None
        return ref(row)
    done = db.execute(update(Service).where(*_unchanged(seen)).values(**values))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return get(db, kind, owner_key)


def _unchanged(seen: ServiceRef) -> list[Any]:
    pid = Service.pid.is_(None) if seen.pid is None else Service.pid == seen.pid
    return [Service.id == seen.id, Service.state == seen.state, pid,
            Service.started_at == seen.started_at]


def renew_claim(db: Session, row_id: int) -> None:
    """Keep a claim without a pid fresh while its starter prepares (an environment install, a
    copy): others take over only a claim older than `STALE_CLAIM_S`."""
    db.execute(update(Service).where(
        Service.id == row_id, Service.state == ServiceState.STARTING, Service.pid.is_(None))
        .values(started_at=utcnow()))


def record_pid(db: Session, row_id: int, *, pid: int, socket_path: str) -> bool:
    """Store the spawned process of a claimed row; False when the row was taken from us."""
    done = db.execute(update(Service).where(
        Service.id == row_id, Service.state == ServiceState.STARTING, Service.pid.is_(None))
        .values(pid=pid, socket=socket_path, started_at=utcnow()))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def mark_ready(db: Session, row_id: int, *, pid: int, info: dict[str, Any]) -> bool:
    """The process answers: `ready` (its idle time counts from now)."""
    done = db.execute(update(Service).where(
        Service.id == row_id, Service.state == ServiceState.STARTING, Service.pid == pid)
        .values(state=ServiceState.READY, info=info, last_used_at=utcnow()))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def mark_failed(db: Session, row_id: int, *, pid: int | None, error: str) -> bool:
    """The process did not start: `failed` with the reason, for whoever waits on the row."""
    pid_is = Service.pid.is_(None) if pid is None else Service.pid == pid
    done = db.execute(update(Service).where(
        Service.id == row_id, Service.state.in_(SERVICE_LIVE), pid_is)
        .values(state=ServiceState.FAILED, error=error, last_used_at=utcnow()))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def mark_stopping(db: Session, row: ServiceRef) -> bool:
    """Ask the row's process to stop (whoever runs on its host signals it)."""
    pid_is = Service.pid.is_(None) if row.pid is None else Service.pid == row.pid
    done = db.execute(update(Service).where(
        Service.id == row.id, Service.state.in_(SERVICE_LIVE), pid_is)
        .values(state=ServiceState.STOPPING))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def remove(db: Session, row_id: int, *, pid: int | None) -> bool:
    """Delete the row if it still names process `pid` (its process is gone)."""
    pid_is = Service.pid.is_(None) if pid is None else Service.pid == pid
    done = db.execute(delete(Service).where(Service.id == row_id, pid_is))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def touch(db: Session, row_id: int) -> None:
    """Record a use of the service (postpones its idle expiry)."""
    db.execute(update(Service).where(Service.id == row_id).values(last_used_at=utcnow()))


def rows(db: Session, kind: str, *, training_id: int | None = None) -> list[ServiceRef]:
    """Every row of `kind` (of one training if given), least recently used first."""
    query = select(Service).where(Service.kind == kind)
    if training_id is not None:
        query = query.where(Service.training_id == training_id)
    return [ref(r) for r in db.scalars(query.order_by(Service.last_used_at, Service.id))]


def detached_rows(db: Session) -> list[ServiceRef]:
    """Rows whose training or repository was deleted (any kind)."""
    return [ref(r) for r in db.scalars(select(Service).where(
        Service.training_id.is_(None), Service.repo_id.is_(None)))]


def count_live(db: Session, kind: str) -> int:
    """How many processes of `kind` run or start in the whole deployment."""
    return db.scalar(select(func.count()).select_from(Service).where(
        Service.kind == kind, Service.state.in_(SERVICE_LIVE))) or 0


def idle_cutoff(idle_s: float) -> datetime:
    """Rows last used before this are idle."""
    return utcnow() - timedelta(seconds=idle_s)


def abandoned(row: ServiceRef, *, idle_s: float) -> bool:
    """True when the row was neither used nor (re)started for twice its kind's idle time plus
    `ABANDONED_MARGIN_S`. A host with a live API process stops its services at the idle time
    and keeps the rows of those in use fresh, so such a row's host has none left (it is gone
    for good): any sweeper may drop the row, and its own host's stops the process."""
    last = max(row.last_used_at, row.started_at)
    return utcnow() - last > timedelta(seconds=2 * idle_s + ABANDONED_MARGIN_S)


def drop_abandoned(db: Session, row: ServiceRef) -> bool:
    """Delete an abandoned row of another host if it is unchanged since it was read (a use or a
    stop by its host meanwhile wins)."""
    done = db.execute(delete(Service).where(
        *_unchanged(row), Service.last_used_at == row.last_used_at))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]
