"""Workers and queues over REST."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.workers import service
from app.workers.schemas import WorkersOverview

router = APIRouter(prefix="/api/v1", tags=["workers"])


@router.get("/workers", response_model=WorkersOverview, response_model_exclude_none=False)
def list_workers(db: SessionDep, user: CurrentUser) -> WorkersOverview:
    """Queue depth and online workers per instance type; admins also get every worker."""
    return service.overview(db, detailed=user.is_admin)
