"""API tokens: a user lists, creates and revokes their own, an admin anyone's (the secret is
shown once)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.auth.service import hash_token, issue_token
from app.errors import Conflict, Invalid, NotFound
from app.models import ApiToken, User, WebSession

MAX_TOKENS_PER_USER = 50


def user_named(db: Session, username: str) -> User:
    """The user called `username` (404 otherwise)."""
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"there is no user '{username}'")
    return user


def list_tokens(db: Session, *, user: User) -> list[ApiToken]:
    """The user's tokens, oldest first."""
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                           .order_by(ApiToken.id)))


def create_token(db: Session, *, user: User, name: str) -> tuple[ApiToken, str]:
    """A new named token of `user`: the row and the secret (returned this once only)."""
    name = name.strip()
    if not 1 <= len(name) <= 60:
        raise Invalid("name must be 1-60 characters",
                      fields=[{"field": "name", "message": "1-60 characters"}])
    count = db.scalar(select(func.count()).where(ApiToken.user_id == user.id)) or 0
    if count >= MAX_TOKENS_PER_USER:
        raise Conflict(f"'{user.username}' has {count} tokens, the limit is "
                       f"{MAX_TOKENS_PER_USER}: revoke one first", code="token_limit")
    value = issue_token(db, user=user, name=name)
    return db.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(value))).one(), value


def revoke_token(db: Session, *, user: User, token_id: int, by: User | None = None) -> None:
    """Delete one of `user`'s tokens, and the browser sessions signed in with it (`by`: the
    admin doing it for `user`, who may revoke even their last token)."""
    for_self = by is None or by.id == user.id
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"you have no token {token_id}" if for_self
                       else f"'{user.username}' has no token {token_id}")
    count = db.scalar(select(func.count()).where(ApiToken.user_id == user.id)) or 0
    if for_self and count <= 1:
        raise Conflict("this is your last token: create another one first, or you could not "
                       "sign in again", code="last_token")
    db.execute(delete(WebSession).where(WebSession.token_id == row.id))
    db.delete(row)
    db.flush()
