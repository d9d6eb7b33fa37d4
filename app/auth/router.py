"""Users and tokens over REST."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app.auth import tokens
from app.auth.deps import AdminUser, CurrentUser
from app.auth.service import create_user
from app.db import SessionDep, transaction
from app.models import ApiToken
from app.params import TokenId, Username

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
    with transaction(db):
        user, token = create_user(db, username=body.username, is_admin=body.is_admin)
    return UserCreated(username=user.username, is_admin=user.is_admin, token=token)


@router.get("/me", response_model=UserPublic)
def get_me(user: CurrentUser) -> UserPublic:
    """The caller's account."""
    return UserPublic(username=user.username, is_admin=user.is_admin, created_at=user.created_at)


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=60, description="What the token is for.")


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str | None = Field(description="The token's first characters; never the secret.")
    created_at: datetime
    last_used_at: datetime | None
    current: bool = Field(description="This request was authenticated with it.")


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret: shown in this response only.")


def _token_public(row: ApiToken, request: Request) -> TokenPublic:
    return TokenPublic(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                       last_used_at=row.last_used_at,
                       current=getattr(request.state, "token_id", None) == row.id)


@router.get("/tokens", response_model=list[TokenPublic], tags=["tokens"])
def get_tokens(request: Request, db: SessionDep, user: CurrentUser) -> list[TokenPublic]:
    """The caller's API tokens (names and prefixes, never the secrets)."""
    return [_token_public(row, request) for row in tokens.list_tokens(db, user=user)]


@router.post("/tokens", status_code=201, response_model=TokenCreated, tags=["tokens"])
def post_token(body: TokenCreate, request: Request, db: SessionDep,
               user: CurrentUser) -> TokenCreated:
    """Create a named API token; its secret is in this response and nowhere else."""
    with transaction(db):
        row, value = tokens.create_token(db, user=user, name=body.name)
    return TokenCreated(**_token_public(row, request).model_dump(), token=value)


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
def delete_token(db: SessionDep, user: CurrentUser, token_id: TokenId) -> Response:
    """Revoke one of the caller's tokens: it stops working at once (so do browser sessions
    signed in with it)."""
    with transaction(db):
        tokens.revoke_token(db, user=user, token_id=token_id)
    return Response(status_code=204)


@router.get("/users/{username}/tokens", response_model=list[TokenPublic], tags=["tokens"])
def get_user_tokens(username: Username, request: Request, db: SessionDep,
                    _admin: AdminUser) -> list[TokenPublic]:
    """A user's API tokens (admin only; names and prefixes, never the secrets)."""
    user = tokens.user_named(db, username)
    return [_token_public(row, request) for row in tokens.list_tokens(db, user=user)]


@router.post("/users/{username}/tokens", status_code=201, response_model=TokenCreated,
             tags=["tokens"])
def post_user_token(username: Username, body: TokenCreate, request: Request, db: SessionDep,
                    _admin: AdminUser) -> TokenCreated:
    """Issue a named API token for a user (admin only); its secret is in this response only."""
    with transaction(db):
        row, value = tokens.create_token(db, user=tokens.user_named(db, username),
                                         name=body.name)
    return TokenCreated(**_token_public(row, request).model_dump(), token=value)


@router.delete("/users/{username}/tokens/{token_id}", status_code=204, tags=["tokens"])
def delete_user_token(username: Username, token_id: TokenId, db: SessionDep,
                      admin: AdminUser) -> Response:
    """Revoke any user's token (admin only): it stops working at once, with the browser
    sessions signed in with it. Unlike their own, an admin may revoke a user's last token."""
    with transaction(db):
        tokens.revoke_token(db, user=tokens.user_named(db, username), token_id=token_id,
                            by=admin)
    return Response(status_code=204)
