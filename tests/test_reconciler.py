"""One reconciler pass on a real database and a real Redis: what it ends, what it sends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session

from app import broker, queue, storage
from app.config import get_settings
from app.db import get_sessionmaker, reset_engine
from app.migrate import upgrade_to_head
from app.models import Repository, Training, TrainingStatus, User, Worker
from app.models.base import utcnow
from app.queue import send_run_training
from app.workers import lease
from app.workers.reconciler import LEASE_NAME, Reconciler, reconcile_once
from app.workers.service import waiting
from tests.live import free_port
from tests.pg import private_database

REDIS_URL = "redis://127.0.0.1:6379/15"


def _configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"TRAINYARD_{key}", value)
    get_settings.cache_clear()
    queue.get_celery.cache_clear()
    broker.redis_client.cache_clear()
    reset_engine()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """A session on a migrated database; this process configured for it and for Redis."""
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'r.db'}" if request.param == "sqlite"
               else stack.enter_context(private_database()))
        upgrade_to_head(url)
        _configure(monkeypatch, DATABASE_URL=url, REDIS_URL=REDIS_URL,
                   DATA_DIR=str(tmp_path), WORKER_LOST_AFTER_S="30", RESEND_AFTER_S="30")
        with get_sessionmaker()() as session:
            yield session
        monkeypatch.undo()
        _configure(monkeypatch)


def _training(db: Session, *, status: TrainingStatus, worker: str | None = None,
              queue_name: str = "trainings.cpu", **values: object) -> Training:
    user = User(username=f"u{uuid.uuid4().hex[:8]}")
    repo = Repository(owner=user, name="r")
    row = Training(repo=repo, job_name="job", config={}, boot_file="main.py", runtime="x",
                   flavor="cpu.standard", queue=queue_name, status=status, worker=worker,
                   **values)
    db.add_all([user, repo, row])
    db.commit()
    return row


def _worker(db: Session, name: str, *, beat_age_s: float) -> None:
    beat = utcnow() - timedelta(seconds=beat_age_s)
    db.add(Worker(name=name, host="h", pid=1, queues=["trainings.cpu"], slots=1, version="t",
                  started_at=beat, last_heartbeat_at=beat))
    db.commit()


def _ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def test_trainings_of_a_silent_worker_end_and_the_others_run_on(db: Session) -> None:
    _worker(db, "silent@h", beat_age_s=45)
    _worker(db, "alive@h", beat_age_s=2)
    running = _training(db, status=TrainingStatus.RUNNING, worker="silent@h",
                        started_at=_ago(100), heartbeat_at=_ago(100))
    stopping = _training(db, status=TrainingStatus.TERMINATING, worker="silent@h",
                         heartbeat_at=_ago(100))
    unknown = _training(db, status=TrainingStatus.CREATING, worker="never-registered@h",
                        heartbeat_at=_ago(40))
    healthy = _training(db, status=TrainingStatus.RUNNING, worker="alive@h",
                        heartbeat_at=_ago(100))
    report = reconcile_once(db, watching_since=_ago(3600))
    assert sorted(report.ended) == sorted([running.id, stopping.id, unknown.id])
    for row in (running, stopping, unknown, healthy):
        db.refresh(row)
    assert running.status == TrainingStatus.ABNORMAL
    assert running.error is not None and running.error.startswith(
        "worker silent@h stopped sending heartbeats (last at ")
    assert running.finished_at is not None and running.duration_s is not None
    assert (stopping.status, "silent@h" in (stopping.error or "")) == ("Terminated", True)
    assert unknown.status == TrainingStatus.ABNORMAL
    assert healthy.status == TrainingStatus.RUNNING


def test_a_database_outage_is_not_taken_for_lost_workers(db: Session) -> None:
    _worker(db, "quiet@h", beat_age_s=120)  # nobody could beat while the database was away
    row = _training(db, status=TrainingStatus.RUNNING, worker="quiet@h",
                    heartbeat_at=_ago(120))
    assert reconcile_once(db, watching_since=_ago(5)).ended == []
    db.refresh(row)
    assert row.status == TrainingStatus.RUNNING
    assert reconcile_once(db, watching_since=_ago(31)).ended == [row.id]


def test_the_outbox_is_sent_and_lost_messages_are_sent_again(db: Session) -> None:
    q = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        unsent = _training(db, status=TrainingStatus.PENDING, queue_name=q,
                           dispatched_at=None, dispatch_error="Redis could not be reached")
        lost = _training(db, status=TrainingStatus.PENDING, queue_name=q,
                         dispatched_at=_ago(60))
        fresh = _training(db, status=TrainingStatus.PENDING, queue_name=q,
                          dispatched_at=_ago(1))
        report = reconcile_once(db, watching_since=_ago(3600))
        assert sorted(report.sent) == sorted([unsent.id, lost.id])
        assert broker.queued_training_ids(q) == [unsent.id, lost.id]
        db.refresh(unsent)
        assert unsent.dispatched_at is not None and unsent.dispatch_error is None
        # Once in the queue, waiting long is no reason to send again.
        db.execute(update(Training).where(Training.id.in_([unsent.id, lost.id]))
                   .values(dispatched_at=_ago(60)))
        db.commit()
        assert reconcile_once(db, watching_since=_ago(3600)).sent == []
        assert client.llen(q) == 2 and fresh.id not in broker.queued_training_ids(q)
    finally:
        client.delete(q)


def test_with_redis_down_the_outbox_keeps_the_training_and_says_why(
        db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    row = _training(db, status=TrainingStatus.PENDING, dispatched_at=None)
    other = _training(db, status=TrainingStatus.PENDING, dispatched_at=None,
                      dispatch_error="Redis could not be reached at creation")
    monkeypatch.setenv("TRAINYARD_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    queue.get_celery.cache_clear()
    report = reconcile_once(db, watching_since=_ago(3600))
    assert (report.unsent, report.sent) == ([row.id, other.id], [])  # one attempt per pass
    db.refresh(row)
    assert row.status == TrainingStatus.PENDING and row.dispatched_at is None
    assert row.dispatch_error is not None and "Redis could not be reached" in row.dispatch_error


def test_after_a_redis_restart_messages_are_looked_for_at_once(db: Session) -> None:
    q = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        just_sent = _training(db, status=TrainingStatus.PENDING, queue_name=q,
                              dispatched_at=_ago(2))
        assert reconcile_once(db, watching_since=_ago(3600)).sent == []
        report = reconcile_once(db, watching_since=_ago(3600), redis_restarted=True)
        assert report.sent == [just_sent.id] and broker.queued_training_ids(q) == [just_sent.id]
        # In the queue now: a restart noticed again sends nothing twice.
        assert reconcile_once(db, watching_since=_ago(3600), redis_restarted=True).sent == []
    finally:
        client.delete(q)

    reconciler = Reconciler()
    reconciler.redis_run_id = "the run id before a restart"
    assert reconciler._redis_restarted() is True
    assert reconciler._redis_restarted() is False


def test_a_waiting_trainings_place_counts_only_pending_ones_ahead(db: Session) -> None:
    q = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        gone = _training(db, status=TrainingStatus.PENDING, queue_name=q)
        ahead = _training(db, status=TrainingStatus.PENDING, queue_name=q)
        mine = _training(db, status=TrainingStatus.PENDING, queue_name=q)
        for row in (gone, ahead, ahead, mine):  # a duplicate message of `ahead` too
            send_run_training(row.id, queue=q)
        gone.status = TrainingStatus.TERMINATED  # terminated while queued
        db.commit()
        place = waiting(db, mine)
        assert place is not None
        assert (place.position, place.queue_depth, place.online_workers) == (2, 2, 0)
        assert place.note is not None and "no online worker" in place.note
    finally:
        client.delete(q)


def test_a_worker_name_is_taken_only_from_a_gone_holder(db: Session) -> None:
    from app.workers.registry import NameInUse, claim_name

    here = socket.gethostname()
    _worker(db, "elsewhere@h", beat_age_s=2)  # another host, fresh heartbeat: live
    with pytest.raises(NameInUse) as refused:
        claim_name("elsewhere@h", host=here, pid=os.getpid())
    said = str(refused.value)
    assert "in use by a live worker on host h (pid 1, last heartbeat " in said, said
    assert "2 s ago" in said and "another --name" in said
    db.add(Worker(name="parent@here", host=here, pid=os.getppid(), queues=[], slots=1,
                  version="t", started_at=_ago(2), last_heartbeat_at=_ago(2)))
    db.commit()
    with pytest.raises(NameInUse):  # this host, and its pid runs (it predates the heartbeat)
        claim_name("parent@here", host=here, pid=os.getpid())

    _worker(db, "silent@h", beat_age_s=45)  # heartbeat older than the bound: gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    db.add(Worker(name="dead@here", host=here, pid=dead.pid, queues=[], slots=1, version="t",
                  started_at=_ago(2), last_heartbeat_at=_ago(2)))
    db.add(Worker(name="stopped@h", host="h", pid=1, queues=[], slots=1, version="t",
                  started_at=_ago(9), last_heartbeat_at=_ago(2), stopped_at=_ago(2)))
    db.commit()
    for name in ("silent@h", "dead@here", "stopped@h", "new@here"):
        claim_name(name, host=here, pid=os.getpid())
        db.expire_all()
        row = db.get(Worker, name)
        assert row is not None and (row.host, row.pid, row.stopped_at) == (
            here, os.getpid(), None)
        assert (utcnow() - row.last_heartbeat_at).total_seconds() < 5
    claim_name("new@here", host=here, pid=os.getpid())  # its own row again: a restart


def test_every_process_sweeps_scratch_nothing_changed_in(
        db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch, TMP_MAX_AGE_S="1.5")
    scratch = storage.tmp_dir()
    old_dir = storage.staging_dir("upload-")
    (old_dir / "sub").mkdir()
    (old_dir / "sub" / "part.bin").write_bytes(b"x" * 1000)
    (scratch / "loose.part").write_bytes(b"y")
    writing = storage.staging_dir("upload-")
    growing = (writing / "big.tar.gz").open("wb")
    time.sleep(2)
    growing.write(b"z" * 100)  # an upload still being written: its folder is older
    growing.flush()
    fresh = storage.staging_dir("copy-")
    copied = fresh / "file.txt"  # a copy keeps the source's old mtime; its ctime is new
    copied.write_text("c")
    os.utime(copied, (time.time() - 7200, time.time() - 7200))
    os.utime(fresh, (time.time() - 7200, time.time() - 7200))

    # Another process leads: this one still sweeps its own data dir (hosts may not share one).
    lease.try_acquire(db, name=LEASE_NAME, holder="another-process", ttl_s=600)
    assert Reconciler().tick() is None
    assert sorted(p.name for p in scratch.iterdir()) == sorted([writing.name, fresh.name])
    growing.close()
    assert storage.sweep_tmp(older_than_s=3600) == []  # nothing is an hour old
