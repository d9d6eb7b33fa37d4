"""Who is calling: the `CurrentUser` and `AdminUser` dependencies."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth.ratelimit import get_failure_limiter
from app.auth.service import find_token
from app.auth.sessions import find_session
from app.db import SessionDep, transaction
from app.errors import Forbidden, Unauthorized
from app.models import User

SESSION_KEY = "sid"  # the server-side session row's key (app/auth/sessions.py)
CSRF_SESSION_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def client_address(request: Request) -> str:
    """The client's address as the server saw it (uvicorn applies trusted proxy headers)."""
    return request.client.host if request.client else "unknown"


def check_csrf(request: Request, supplied: str | None) -> None:
    """Refuse an unsafe request of a browser session that lacks the session's CSRF token."""
    expected = request.session.get(CSRF_SESSION_KEY)
    if not (isinstance(expected, str) and supplied
            and secrets.compare_digest(expected.encode(), supplied.encode())):
        raise Forbidden(f"missing or wrong CSRF token: a signed-in browser must send the "
                        f"page's token as {CSRF_HEADER}; reload the page and try again",
                        code="csrf_failed")


def optional_user(request: Request, db: SessionDep) -> User | None:
    """The caller, from a Bearer token or a browser session; None when anonymous."""
    if _bearer(request) is not None:
        return bearer_user(request, db)
    user = browser_user(request, db)
    if user is not None:
        # A cookie rides along with cross-site requests; the token in the page does not.
        if request.method in UNSAFE_METHODS:
            check_csrf(request, request.headers.get(CSRF_HEADER))
        return user
    return None


def bearer_user(request: Request, db: Session) -> User | None:
    """The owner of the request's Bearer token; None without one, 401 for a wrong one."""
    token = _bearer(request)
    if token is None:
        return None
    limiter, client = get_failure_limiter(), client_address(request)
    limiter.check(client)
    # Its own short transaction: the token's last use counts for reads and refused requests
    # too (recorded at most once a minute, so most requests write nothing here).
    with transaction(db):
        row = find_token(db, token)
    if row is None:
        limiter.record_failure(client, what=f"invalid Bearer token on {request.method} "
                                            f"{request.url.path}")
        raise Unauthorized("invalid API token")
    request.state.token_id = row.id
    return row.user


def browser_user(request: Request, db: Session) -> User | None:
    """The user of the request's live browser session (no CSRF check here), or None."""
    if "session" not in request.scope:
        return None
    key = request.session.get(SESSION_KEY)
    row = find_session(db, key) if isinstance(key, str) else None
    if row is None:
        return None
    request.state.token_id = row.token_id
    return row.user


def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    """The authenticated caller (401 otherwise)."""
    if user is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The caller, who must be an admin (403 otherwise)."""
    if not user.is_admin:
        raise Forbidden("only an admin may do this")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
