"""Users' code repositories (the files live on disk under the data dir)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models.base import UTCDateTime, utcnow
from app.models.user import User


class Repository(Base):
    __tablename__ = "repositories"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_repositories_owner_name"),
        # As on code hosts, alice/ResNet50 and alice/resnet50 cannot both exist.
        Index("uq_repositories_owner_lower_name", "owner_id", func.lower("name"), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    template: Mapped[str | None] = mapped_column(String(40), nullable=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    # Bumped by every training creation: the UPDATE takes the row's write lock, which
    # serialises the per-repo training rules on PostgreSQL and SQLite alike.
    training_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    owner: Mapped[User] = relationship()

    @property
    def full_name(self) -> str:
        """`owner/name`."""
        return f"{self.owner.username}/{self.name}"
