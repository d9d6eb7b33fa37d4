"""Users and API tokens: creation, lookup, the bootstrap admin."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid
from app.models import ApiToken, User
from app.models.base import utcnow

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,38}[A-Za-z0-9]$")
TOKEN_PREFIX = "ty_"
LAST_USED_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    """The stored form of a token (SHA-256: tokens carry 256 random bits, no stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_value() -> str:
    """A fresh random API token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(db: Session, *, user: User, name: str = "default",
                value: str | None = None) -> str:
    """Store a new token for `user` and return its value (shown once)."""
    token = value or new_token_value()
    db.add(ApiToken(user=user, token_hash=hash_token(token), name=name,
                    prefix=token_prefix(token)))
    db.flush()
    return token


def token_prefix(token: str) -> str:
    """What the token list shows of a token: its first 10 characters (never the secret)."""
    return token[:len(TOKEN_PREFIX) + 7]


def create_user(db: Session, *, username: str, is_admin: bool = False) -> tuple[User, str]:
    """Create a user with a first API token; the username must be new."""
    if not USERNAME_RE.match(username):
        raise Invalid("username must be 3-40 characters of letters, digits, '_', '.', '-' "
                      "starting and ending with a letter or digit",
                      fields=[{"field": "username", "message": "invalid username"}])
    if db.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user '{username}' already exists", code="duplicate_user")
    user = User(username=username, is_admin=is_admin)
    db.add(user)
    try:
        db.flush()
    except IntegrityError as exc:
        raise Conflict(f"user '{username}' already exists", code="duplicate_user") from exc
    return user, issue_token(db, user=user)


def find_token(db: Session, token: str) -> ApiToken | None:
    """The stored token whose value is `token` (its use is recorded), or None."""
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is not None:
        now = utcnow()
        # Recorded at most once a minute, so that reading requests stay reads (no write lock).
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
            row.last_used_at = now
    return row


def user_for_token(db: Session, token: str) -> User | None:
    """The user owning `token`, or None."""
    row = find_token(db, token)
    return None if row is None else row.user


def ensure_admin(db: Session, *, token: str | None) -> str | None:
    """Create the `admin` user on first start; return a new token when one was generated.

    With `token` given (TRAINYARD_ADMIN_TOKEN) it is registered as the admin's token.
    """
    admin = db.scalar(select(User).where(User.username == "admin"))
    if admin is None:
        admin = User(username="admin", is_admin=True)
        db.add(admin)
        db.flush()
        if token is None:
            return issue_token(db, user=admin, name="bootstrap")
    if token is not None and db.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == hash_token(token))) is None:
        issue_token(db, user=admin, name="bootstrap", value=token)
    return None
