"""Browser sessions kept on the server: the cookie names a row, signing out deletes it."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import ApiToken, User, WebSession
from app.models.base import utcnow

SESSION_MAX_AGE_S = 14 * 24 * 3600


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def start_session(db: Session, *, user: User, token: ApiToken | None) -> str:
    """Record a new signed-in browser of `user` and return the key its cookie carries."""
    now = utcnow()
    db.execute(delete(WebSession).where(WebSession.user_id == user.id,
                                        WebSession.expires_at < now))
    key = secrets.token_urlsafe(32)
    db.add(WebSession(user_id=user.id, token_id=token.id if token else None,
                      key_hash=_key_hash(key), created_at=now,
                      expires_at=now + timedelta(seconds=SESSION_MAX_AGE_S)))
    db.flush()
    return key


def find_session(db: Session, key: str) -> WebSession | None:
    """The live session of `key`, or None when it ended, expired or never existed."""
    row = db.scalar(select(WebSession).where(WebSession.key_hash == _key_hash(key)))
    return None if row is None or row.expires_at <= utcnow() else row


def user_for_session(db: Session, key: str) -> User | None:
    """The user of a live session, or None."""
    row = find_session(db, key)
    return None if row is None else row.user


def end_session(db: Session, key: str) -> None:
    """Forget a session on the server: its cookie, even replayed, signs nobody in again."""
    db.execute(delete(WebSession).where(WebSession.key_hash == _key_hash(key)))
    db.flush()
