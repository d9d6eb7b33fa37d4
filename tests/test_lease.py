"""The reconciler's lease: one holder at a time, renewed by it, taken over once it expires."""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from app.workers.lease import release, try_acquire


def test_one_holder_until_it_expires_or_releases(sessions: sessionmaker[Session]) -> None:
    with sessions() as a, sessions() as b:
        assert try_acquire(a, name="x", holder="A", ttl_s=1.0)
        assert not try_acquire(b, name="x", holder="B", ttl_s=1.0)
        assert try_acquire(a, name="x", holder="A", ttl_s=1.0)  # renewal
        time.sleep(1.2)
        assert try_acquire(b, name="x", holder="B", ttl_s=30.0)  # A let it expire
        assert not try_acquire(a, name="x", holder="A", ttl_s=30.0)
        release(b, name="x", holder="B")
        assert try_acquire(a, name="x", holder="A", ttl_s=30.0)


def test_concurrent_contenders_get_exactly_one_lease(sessions: sessionmaker[Session]) -> None:
    won: list[str] = []
    start = threading.Barrier(8)

    def contend(holder: str) -> None:
        with sessions() as db:
            start.wait()
            if try_acquire(db, name="race", holder=holder, ttl_s=30.0):
                won.append(holder)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
