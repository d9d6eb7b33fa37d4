"""Browser sessions: the signed cookie, sign-in state, CSRF tokens and one-shot messages."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from app.auth.deps import CSRF_SESSION_KEY, SESSION_USER_KEY, check_csrf
from app.config import get_settings
from app.models import User

SESSION_COOKIE = "trainyard_session"
SESSION_MAX_AGE_S = 14 * 24 * 3600
CSRF_FORM_FIELD = "csrf_token"
FLASH_KEY = "flash"


@lru_cache
def _fallback_secret() -> str:
    # Without a configured secret, sessions last as long as this process.
    return secrets.token_urlsafe(32)


def install_sessions(app: FastAPI) -> None:
    """Add the signed session cookie (HTTP on localhost, SameSite=Lax)."""
    secret = get_settings().session_secret or _fallback_secret()
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="lax", https_only=False)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_SESSION_KEY] = token
    return token


def check_form_csrf(request: Request, supplied: Any) -> None:
    """Refuse a form post whose hidden CSRF field is not the session's token."""
    check_csrf(request, supplied if isinstance(supplied, str) else None)


def session_user(request: Request, db: Session) -> User | None:
    """The signed-in user of this browser, or None."""
    user_id = request.session.get(SESSION_USER_KEY)
    if not isinstance(user_id, int):
        return None
    user = db.get(User, user_id)
    if user is None:
        request.session.pop(SESSION_USER_KEY, None)
    return user


def sign_in(request: Request, user: User) -> None:
    """Start a fresh session for `user` (a new CSRF token too)."""
    request.session.clear()
    request.session[SESSION_USER_KEY] = user.id
    csrf_token(request)


def sign_out(request: Request) -> None:
    """Forget the session."""
    request.session.clear()


def flash(request: Request, message: str, *, kind: str = "success") -> None:
    """Queue a message for the next page this browser renders."""
    request.session[FLASH_KEY] = {"kind": kind, "message": message}


def pop_flash(request: Request) -> dict[str, str] | None:
    """The queued message, removed from the session."""
    value = request.session.pop(FLASH_KEY, None)
    return value if isinstance(value, dict) else None
