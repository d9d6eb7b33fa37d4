"""The launcher's rows on SQLite and PostgreSQL: one claim wins, a dead starter's row is taken
over once, transitions only apply to the row as it was seen."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.launcher import records
from app.launcher.launcher import Launcher
from app.models import Repository, Service, ServiceState, User
from app.models.base import utcnow


def _claim_in_threads(sessions: sessionmaker[Session], seen: records.ServiceRef | None,
                      n: int = 8) -> list[records.ServiceRef | None]:
    results: list[records.ServiceRef | None] = [None] * n
    barrier = threading.Barrier(n)

    def claim(i: int) -> None:
        with sessions() as db:
            barrier.wait()
            results[i] = records.claim(db, "predictor", "training:1:best.ckpt",
                                       training_id=None, repo_id=None, seen=seen)
            db.commit()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_claims_have_one_winner_and_a_dead_starter_is_taken_over_once(
        sessions: sessionmaker[Session]) -> None:
    won = [r for r in _claim_in_threads(sessions, None) if r is not None]
    assert len(won) == 1 and won[0].state == ServiceState.STARTING and won[0].pid is None
    with sessions() as db:
        row = records.get(db, "predictor", "training:1:best.ckpt")
    assert row is not None and not records.is_gone(row)  # a fresh claim: its starter works

    # A claim that never got a pid goes stale; a claim renewed by its starter does not.
    with sessions() as db:
        db.execute(update(Service).values(started_at=row.started_at - timedelta(seconds=60)))
        db.commit()
        old = records.get(db, "predictor", "training:1:best.ckpt")
    assert old is not None and records.is_gone(old)
    taken = [r for r in _claim_in_threads(sessions, old) if r is not None]
    assert len(taken) == 1 and taken[0].started_at > old.started_at

    # The winner records its process; a pid that is not running reads as gone.
    with sessions() as db:
        assert records.record_pid(db, taken[0].id, pid=os.getpid(), socket_path="/x.sock")
        assert not records.record_pid(db, taken[0].id, pid=1, socket_path="/y.sock")
        assert records.mark_ready(db, taken[0].id, pid=os.getpid(), info={"load_s": 1.5})
        db.commit()
        ready = records.get(db, "predictor", "training:1:best.ckpt")
    assert ready is not None and ready.state == ServiceState.READY
    assert ready.info == {"load_s": 1.5} and not records.is_gone(ready)
    dead = records.ServiceRef(**{**ready.__dict__, "pid": 2 ** 22 + 12345})
    assert records.is_gone(dead)

    # Stopping applies to the row as seen; a stale view changes nothing.
    with sessions() as db:
        assert not records.mark_stopping(db, dead)
        assert records.mark_stopping(db, ready)
        assert not records.remove(db, ready.id, pid=12)
        assert records.remove(db, ready.id, pid=ready.pid)
        db.commit()
        assert records.get(db, "predictor", "training:1:best.ckpt") is None


def _repo_id(sessions: sessionmaker[Session]) -> int:
    """A repository for service rows to belong to (a row of none is stopped as detached)."""
    with sessions() as db:
        repo = Repository(owner=User(username="svc-owner"), name="r")
        db.add(repo)
        db.commit()
        return repo.id


def test_rows_a_gone_host_abandoned_are_dropped_by_any_sweeper(
        sessions: sessionmaker[Session]) -> None:
    idle_s = 10.0
    # No process has this pid (above Linux's pid_max): the sweep signals nothing real.
    no_pid = 2 ** 22 + 12345
    abandoned_s = 2 * idle_s + records.ABANDONED_MARGIN_S
    now = utcnow()
    repo_id = _repo_id(sessions)

    def plant(owner: str, *, host: str, state: ServiceState, used_s_ago: float,
              started_s_ago: float | None = None) -> None:
        used = now - timedelta(seconds=used_s_ago)
        started = now - timedelta(seconds=started_s_ago if started_s_ago is not None
                                  else used_s_ago)
        with sessions() as db:
            db.add(Service(kind="predictor", owner_key=owner, repo_id=repo_id, host=host,
                           socket="/gone.sock",
                           pid=no_pid if state != ServiceState.STARTING else None, state=state,
                           info={}, started_at=started, last_used_at=used))
            db.commit()

    plant("gone-ready", host="gone-host", state=ServiceState.READY, used_s_ago=abandoned_s + 5)
    plant("gone-stopping", host="gone-host", state=ServiceState.STOPPING,
          used_s_ago=abandoned_s + 600)
    # Idle, but not for long enough: its host's own sweeper stops it if that host lives.
    plant("idle", host="live-host", state=ServiceState.READY, used_s_ago=abandoned_s - 30)
    # A start still being prepared renews its claim (`started_at`): not abandoned.
    plant("starting", host="gone-host", state=ServiceState.STARTING,
          used_s_ago=abandoned_s + 5, started_s_ago=3)
    plant("ours", host=records.HOST, state=ServiceState.READY, used_s_ago=abandoned_s + 5)

    launcher = Launcher(kind="predictor", max_count=4, idle_s=idle_s, sessions=sessions)
    asyncio.run(launcher.sweep())
    with sessions() as db:
        left = {r.owner_key: r.host for r in records.rows(db, "predictor")}
    # This host's abandoned row names a pid that does not run here: removed too.
    assert left == {"idle": "live-host", "starting": "gone-host"}

    # A row used meanwhile by its host is not dropped on a stale reading.
    plant("used-meanwhile", host="gone-host", state=ServiceState.READY,
          used_s_ago=abandoned_s + 5)
    with sessions() as db:
        seen = records.get(db, "predictor", "used-meanwhile")
        assert seen is not None and records.abandoned(seen, idle_s=idle_s)
        records.touch(db, seen.id)
        db.commit()
    with sessions() as db:
        assert not records.drop_abandoned(db, seen)
        db.commit()
        assert records.get(db, "predictor", "used-meanwhile") is not None


def test_a_sweeper_keeps_the_row_of_a_service_in_use_fresh(
        sessions: sessionmaker[Session]) -> None:
    # A long request in flight: the row must not look unused to other hosts' sweepers.
    service = subprocess.Popen(["sleep", "120"])
    try:
        time.sleep(0.1)
        repo_id = _repo_id(sessions)
        now = utcnow()
        with sessions() as db:
            db.add(Service(kind="predictor", owner_key="busy", repo_id=repo_id, host=records.HOST,
                           socket="/busy.sock", pid=service.pid, state=ServiceState.READY,
                           info={}, started_at=now, last_used_at=now - timedelta(hours=3)))
            db.commit()
        launcher = Launcher(kind="predictor", max_count=4, idle_s=10.0, sessions=sessions)
        launcher.in_use["busy"] = 1

        async def sweep() -> None:
            await launcher.sweep()
            await asyncio.gather(*launcher._tasks)

        asyncio.run(sweep())
        with sessions() as db:
            row = records.get(db, "predictor", "busy")
        assert row is not None and row.state == ServiceState.READY
        assert (utcnow() - row.last_used_at).total_seconds() < 5
        assert service.poll() is None  # in use: not stopped for being idle
    finally:
        service.kill()
        service.wait()
