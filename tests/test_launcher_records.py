"""The launcher's rows on SQLite and PostgreSQL: one claim wins, a dead starter's row is taken
over once, transitions only apply to the row as it was seen."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.launcher import records
from app.models import Service, ServiceState


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
