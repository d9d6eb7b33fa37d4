"""Who is calling: the `CurrentUser` and `AdminUser` dependencies."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from app.auth.service import user_for_token
from app.db import SessionDep
from app.errors import Forbidden, Unauthorized
from app.models import User

SESSION_USER_KEY = "user_id"
CSRF_SESSION_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


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
    token = _bearer(request)
    if token is not None:
        user = user_for_token(db, token)
        if user is None:
            raise Unauthorized("invalid API token")
        db.commit()
        return user
    if "session" in request.scope:
        user_id = request.session.get(SESSION_USER_KEY)
        if isinstance(user_id, int):
            # A cookie rides along with cross-site requests; the token in the page does not.
            if request.method in UNSAFE_METHODS:
                check_csrf(request, request.headers.get(CSRF_HEADER))
            return db.get(User, user_id)
    return None


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
