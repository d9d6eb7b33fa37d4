"""Long-lived per-model service processes (predictors, Aim UIs): one row per running process.

The row is what every API process consults to reach the one process of an owner: which host
runs it, the unix socket it serves on, the pid of its reaper shim. `app.launcher` owns these
rows (claims, records, stops and sweeps them in its own short transactions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.base import UTCDateTime, utcnow
from app.statuses import ServiceState


class Service(Base):
    """One service process of an owner ("training:12:out/best.ckpt"), unique per kind.

    Deleting its training or repository sets the foreign key to NULL in the same transaction:
    a row with no training and no repository is detached, and is stopped after the commit.
    """

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("kind", "owner_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    owner_key: Mapped[str] = mapped_column(String(400))
    training_id: Mapped[int | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="SET NULL"), nullable=True, index=True)
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="SET NULL"), nullable=True, index=True)
    host: Mapped[str] = mapped_column(String(200))
    socket: Mapped[str | None] = mapped_column(String(300), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(20), default=ServiceState.STARTING)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
