"""Evaluations: an Aim UI opened over a finished training's metrics, or over a repository's."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.base import UTCDateTime, utcnow
from app.statuses import EvaluationStatus as EvaluationStatus  # also imported from here


class Evaluation(Base):
    """One Aim UI: of a training (custom or standard) or comparing a repository's trainings.

    Its process (host, socket, pid) is the `services` row of kind `aim` owned by
    "training:<id>" or "repo:<id>"; `created_at` is the generation, renewed by each start."""

    __tablename__ = "evaluations"
    __table_args__ = (
        CheckConstraint("(training_id IS NULL) <> (repo_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    training_id: Mapped[int | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="CASCADE"), unique=True, nullable=True)
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), unique=True, nullable=True)
    type: Mapped[str] = mapped_column(String(20))  # custom | standard | compare
    aim_path: Mapped[str | None] = mapped_column(String(300), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=EvaluationStatus.STARTING)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
