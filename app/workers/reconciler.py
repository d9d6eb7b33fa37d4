"""The reconciler: one active copy, every few seconds, makes the database true again.

It ends the trainings of workers that stopped heartbeating (Abnormal, or Terminated when the
user had asked to terminate), and sends again the Pending trainings whose queue message was
never sent (the outbox) or is in no queue any more (Redis lost it). Now and then it also
removes the scratch a killed upload or import left in `<data>/tmp`. Every process that runs
it (API processes, workers) competes for one lease; only the holder works.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import storage
from app.broker import publish_terminate, queued_training_ids, server_run_id
from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Training, TrainingStatus, Worker
from app.models.base import utcnow
from app.queue import send_run_training
from app.workers import lease
from app.workers.periodic import Periodic

log = logging.getLogger(__name__)

LEASE_NAME = "reconciler"
IN_PROGRESS = (TrainingStatus.CREATING, TrainingStatus.RUNNING, TrainingStatus.TERMINATING)
FORGET_WORKERS_AFTER = timedelta(days=7)


@dataclass
class Report:
    """What one pass changed."""

    ended: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _end(db: Session, training: Training, status: TrainingStatus, error: str,
         now: datetime) -> bool:
    # Conditional on the status seen, so a worker that records an outcome meanwhile wins.
    duration = None
    if training.started_at is not None:
        duration = round((now - training.started_at).total_seconds(), 3)
    done = db.execute(update(Training).where(Training.id == training.id,
                                             Training.status == training.status)
                      .values(status=status, finished_at=now, duration_s=duration, error=error))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def end_trainings_of_lost_workers(db: Session, *, now: datetime,
                                  watching_since: datetime) -> list[int]:
    """Finish in-progress trainings whose worker's heartbeat is older than the bound.

    `watching_since` is when this process last started reaching the database: a worker gets
    the whole bound from then, so a database outage (no one could beat) is not a mass loss.
    """
    bound = timedelta(seconds=get_settings().worker_lost_after_s)
    rows = db.execute(select(Training, Worker)
                      .outerjoin(Worker, Worker.name == Training.worker)
                      .where(Training.status.in_(IN_PROGRESS))).all()
    ended: list[int] = []
    for training, worker in rows:
        beats = [t for t in (worker.last_heartbeat_at if worker else None,
                             training.heartbeat_at) if t is not None]
        last = max(beats) if beats else None
        if now - max([*beats, watching_since]) <= bound:
            continue
        age = "" if last is None else f", {(now - last).total_seconds():.0f} s before this check"
        lost = (f"worker {training.worker} stopped sending heartbeats (last at {_when(last)}"
                f"{age})")
        if training.state is TrainingStatus.TERMINATING:
            status, error = TrainingStatus.TERMINATED, f"terminated: {lost}"
        else:
            status, error = TrainingStatus.ABNORMAL, f"{lost}; the training was lost with it"
        if _end(db, training, status, error, now):
            ended.append(training.id)
            log.warning("training %s: %s", training.id, error)
    db.commit()
    for tid in ended:  # should the worker be alive after all, it stops the run now
        publish_terminate(tid)
    return ended


def _lost_messages(candidates: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The (id, queue) pairs whose message is in no Redis queue (raises if Redis is down)."""
    waiting: dict[str, set[int]] = {}
    for _tid, queue in candidates:
        if queue not in waiting:
            waiting[queue] = set(queued_training_ids(queue))
    return [(tid, queue) for tid, queue in candidates if tid not in waiting[queue]]


def send_pending(db: Session, *, now: datetime, report: Report,
                 redis_restarted: bool = False) -> None:
    """Send the outbox (never sent) and again every Pending training whose message was lost.

    A message is looked for only once it had time to be taken (`resend_after_s`), except
    right after Redis restarted, when every queued message may be gone.
    """
    resend_after = timedelta(seconds=0 if redis_restarted else get_settings().resend_after_s)
    rows = db.execute(select(Training.id, Training.queue, Training.dispatched_at)
                      .where(Training.status == TrainingStatus.PENDING)
                      .order_by(Training.id)).all()
    outbox = [(r.id, r.queue) for r in rows if r.dispatched_at is None]
    stale = [(r.id, r.queue) for r in rows
             if r.dispatched_at is not None and now - r.dispatched_at > resend_after]
    try:
        lost = _lost_messages(stale) if stale else []
    except redis.RedisError as exc:
        log.warning("cannot read the queues (%s); %d Pending trainings not checked", exc,
                    len(stale))
        lost = []
    db.rollback()  # end the read transaction before sending (SQLite keeps no snapshot open)
    todo = outbox + lost
    for i, (tid, queue) in enumerate(todo):
        if not _send_one(db, tid, queue):
            # Redis is down: the rest waits for the next pass rather than for more timeouts.
            report.unsent.extend(t for t, _q in todo[i:])
            break
        report.sent.append(tid)


def _send_one(db: Session, tid: int, queue: str) -> bool:
    try:
        send_run_training(tid, queue=queue)
    except Exception as exc:
        note = f"Redis could not be reached at {_when(utcnow())} ({exc})"
        db.execute(update(Training).where(Training.id == tid,
                                          Training.status == TrainingStatus.PENDING)
                   .values(dispatched_at=None, dispatch_error=note))
        db.commit()
        return False
    db.execute(update(Training).where(Training.id == tid,
                                      Training.status == TrainingStatus.PENDING)
               .values(dispatched_at=utcnow(), dispatch_error=None))
    db.commit()
    return True


def forget_old_workers(db: Session, *, now: datetime) -> None:
    """Drop the rows of workers not seen for a week (their history stays on the trainings)."""
    db.execute(delete(Worker).where(Worker.last_heartbeat_at < now - FORGET_WORKERS_AFTER))
    db.commit()


def reconcile_once(db: Session, *, watching_since: datetime,
                   redis_restarted: bool = False) -> Report:
    """One pass: end the trainings of lost workers, then send what no queue holds."""
    report = Report()
    now = utcnow()
    report.ended = end_trainings_of_lost_workers(db, now=now, watching_since=watching_since)
    send_pending(db, now=now, report=report, redis_restarted=redis_restarted)
    forget_old_workers(db, now=now)
    if report.sent or report.ended:
        log.info("reconciler: ended %s, sent %s", report.ended, report.sent)
    return report


class Reconciler:
    """The loop: every `reconcile_every_s`, take or renew the lease, and if held, reconcile."""

    def __init__(self) -> None:
        self.holder = lease.new_holder_id()
        settings = get_settings()
        self.ttl_s = settings.lease_ttl_s
        self.periodic = Periodic("reconciler", settings.reconcile_every_s, self.tick)
        self.leading = False
        self.watching_since: datetime | None = None
        self.redis_run_id: str | None = None
        self.next_sweep = 0.0  # monotonic; a process sweeps at once when it starts

    def tick(self) -> Report | None:
        """Reconcile if this process holds the lease; None when another one does. Every
        process sweeps its own data dir's scratch, lease or not (hosts may not share one)."""
        self._sweep_tmp()
        with get_sessionmaker()() as db:
            try:
                self.leading = lease.try_acquire(db, name=LEASE_NAME, holder=self.holder,
                                                 ttl_s=self.ttl_s)
            except Exception:
                self.watching_since = None  # the database is away: start watching anew
                raise
            if self.watching_since is None:
                self.watching_since = utcnow()
            if not self.leading:
                return None
            return reconcile_once(db, watching_since=self.watching_since,
                                  redis_restarted=self._redis_restarted())

    def _sweep_tmp(self) -> None:
        """Remove old scratch from `<data>/tmp`, at most every `tmp_sweep_every_s`."""
        if time.monotonic() < self.next_sweep:
            return
        settings = get_settings()
        self.next_sweep = time.monotonic() + settings.tmp_sweep_every_s
        removed = storage.sweep_tmp(older_than_s=settings.tmp_max_age_s)
        if removed:
            log.warning("removed scratch left in %s for over %.0f s: %s", storage.tmp_dir(),
                        settings.tmp_max_age_s, ", ".join(sorted(removed)))

    def _redis_restarted(self) -> bool:
        """True when Redis answers with another run id than at the last look."""
        run_id = server_run_id()
        restarted = None not in (run_id, self.redis_run_id) and run_id != self.redis_run_id
        if run_id is not None:
            self.redis_run_id = run_id
        return restarted

    def start(self) -> Reconciler:
        """Run the loop in a daemon thread."""
        self.periodic.start()
        return self

    def stop(self) -> None:
        """End the loop and hand the lease over at once."""
        self.periodic.stop()
        if self.leading:
            try:
                with get_sessionmaker()() as db:
                    lease.release(db, name=LEASE_NAME, holder=self.holder)
            except Exception:
                log.exception("could not release the reconciler lease")
