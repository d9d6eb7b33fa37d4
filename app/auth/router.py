"""Users and tokens over REST."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.deps import AdminUser, CurrentUser
from app.auth.service import create_user
from app.db import SessionDep

router = APIRouter(prefix="/api/v1", tags=["users"])


class UserCreate(BaseModel):
    username: str
    is_admin: bool = False


class UserCreated(BaseModel):
    username: str
    is_admin: bool
    token: str


class UserPublic(BaseModel):
    username: str
    is_admin: bool
    created_at: datetime


@router.post("/users", status_code=201, response_model=UserCreated)
def post_user(body: UserCreate, db: SessionDep, _admin: AdminUser) -> UserCreated:
    """Create a user (admin only); the response carries its first API token."""
    user, token = create_user(db, username=body.username, is_admin=body.is_admin)
    db.commit()
    return UserCreated(username=user.username, is_admin=user.is_admin, token=token)


@router.get("/me", response_model=UserPublic)
def get_me(user: CurrentUser) -> UserPublic:
    """The caller's account."""
    return UserPublic(username=user.username, is_admin=user.is_admin, created_at=user.created_at)
