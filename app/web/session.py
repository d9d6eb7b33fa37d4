"""Browser sessions: the signed cookie, sign-in state, CSRF tokens and one-shot messages."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from app.auth.deps import CSRF_SESSION_KEY, SESSION_KEY, check_csrf
from app.auth.sessions import SESSION_MAX_AGE_S, end_session, start_session, user_for_session
from app.config import get_settings
from app.models import ApiToken, User

SESSION_COOKIE = "trainyard_session"
CSRF_FORM_FIELD = "csrf_token"
FLASH_KEY = "flash"


@lru_cache
def _fallback_secret() -> str:
    # Without a configured secret, sessions last as long as this process.
    return secrets.token_urlsafe(32)


def install_sessions(app: FastAPI) -> None:
    """Add the signed session cookie (HttpOnly, SameSite=Lax, Secure when configured)."""
    settings = get_settings()
    secret = settings.session_secret or _fallback_secret()
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="lax",
                       https_only=settings.secure_cookies)


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
    """The signed-in user of this browser, or None (also after sign-out or expiry)."""
    key = request.session.get(SESSION_KEY)
    if not isinstance(key, str):
        return None
    user = user_for_session(db, key)
    if user is None:
        request.session.pop(SESSION_KEY, None)
    return user


def sign_in(request: Request, db: Session, *, user: User, token: ApiToken | None) -> None:
    """Start a fresh session for `user`, recorded on the server (a new CSRF token too)."""
    request.session.clear()
    request.session[SESSION_KEY] = start_session(db, user=user, token=token)
    csrf_token(request)


def sign_out(request: Request, db: Session) -> None:
    """End the session on the server and forget it in the browser."""
    key = request.session.get(SESSION_KEY)
    if isinstance(key, str):
        end_session(db, key)
    request.session.clear()


def flash(request: Request, message: str, *, kind: str = "success") -> None:
    """Queue a message for the next page this browser renders."""
    request.session[FLASH_KEY] = {"kind": kind, "message": message}


def pop_flash(request: Request) -> dict[str, str] | None:
    """The queued message, removed from the session."""
    value = request.session.pop(FLASH_KEY, None)
    return value if isinstance(value, dict) else None
