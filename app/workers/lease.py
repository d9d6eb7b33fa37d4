"""A lease row: at most one holder at a time, until it expires unless renewed.

Works the same on SQLite and PostgreSQL: taking or renewing the lease is one conditional
`UPDATE` (the database serialises writers to a row), and the first holder `INSERT`s the row.
Expiry compares timestamps written by the hosts' clocks, so hosts need synchronised clocks
(NTP); a skew well under the lease's lifetime does no harm.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Lease
from app.models.base import utcnow


def new_holder_id() -> str:
    """A name for this process as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def try_acquire(db: Session, *, name: str, holder: str, ttl_s: float) -> bool:
    """Take or renew the lease `name` for `ttl_s` seconds; False if someone else holds it."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_s)
    taken = db.execute(update(Lease).where(Lease.name == name,
                                           or_(Lease.holder == holder, Lease.expires_at < now))
                       .values(holder=holder, expires_at=expires))
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        db.commit()
        return True
    exists = db.get(Lease, name) is not None
    db.rollback()
    if exists:
        return False
    try:
        db.add(Lease(name=name, holder=holder, expires_at=expires))
        db.commit()
    except IntegrityError:  # another process inserted it first
        db.rollback()
        return False
    return True


def release(db: Session, *, name: str, holder: str) -> None:
    """Give the lease up at once (on a clean shutdown), if this holder has it."""
    db.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
               .values(expires_at=utcnow()))
    db.commit()
