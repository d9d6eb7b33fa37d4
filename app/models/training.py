"""Training instances: the config a user submitted and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models.base import UTCDateTime, utcnow
from app.models.repo import Repository
from app.models.user import User
from app.statuses import UNFINISHED, TrainingStatus

# The partial unique index's condition, in the enum's order: Pending, Creating, Running, ...
_UNFINISHED_SQL = "status IN ({})".format(
    ", ".join(f"'{status.value}'" for status in TrainingStatus if status in UNFINISHED))


class Training(Base):
    __tablename__ = "trainings"
    __table_args__ = (
        UniqueConstraint("repo_id", "job_name", name="uq_trainings_repo_job_name"),
        # The database itself refuses a second unfinished training in a repo.
        Index("uq_trainings_one_unfinished_per_repo", "repo_id", unique=True,
              sqlite_where=text(_UNFINISHED_SQL), postgresql_where=text(_UNFINISHED_SQL)),
        # Ids name folders and URLs: never hand a deleted training's id to a new one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"),
                                         index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                      nullable=True)
    job_name: Mapped[str] = mapped_column(String(50))
    job_description: Mapped[str] = mapped_column(String(100), default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    sdk: Mapped[str] = mapped_column(String(40), default="ModelArts")
    code_dir: Mapped[str] = mapped_column(String(60), default="")
    boot_file: Mapped[str] = mapped_column(String(60))
    runtime: Mapped[str] = mapped_column(String(60))
    flavor: Mapped[str] = mapped_column(String(60))
    queue: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(20), default=TrainingStatus.PENDING, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    python: Mapped[str | None] = mapped_column(String(400), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The outbox: when the queue message was last sent (None: not sent yet), and why the
    # last attempt failed; the reconciler sends again what no worker has.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    dispatch_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)

    repo: Mapped[Repository] = relationship()
    created_by: Mapped[User | None] = relationship()

    @property
    def state(self) -> TrainingStatus:
        """The status as an enum."""
        return TrainingStatus(self.status)


def finish(training: Training, status: TrainingStatus, *, error: str | None = None) -> None:
    """Record a final status with its end time and duration."""
    now = utcnow()
    training.status = status
    training.finished_at = now
    if training.started_at is not None:
        training.duration_s = round((now - training.started_at).total_seconds(), 3)
    if error is not None:
        training.error = error
