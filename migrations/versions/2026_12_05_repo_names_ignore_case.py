"""repository names unique per owner regardless of case

Revision ID: 5c1f0e7a9b2d
Revises: 5b7e2c9d4a10
Create Date: 2026-12-05 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5c1f0e7a9b2d'
down_revision: str | None = '5b7e2c9d4a10'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Fails if an owner already has two names differing only in case: rename one first.
    op.create_index('uq_repositories_owner_lower_name', 'repositories',
                    ['owner_id', sa.text('lower(name)')], unique=True)


def downgrade() -> None:
    op.drop_index('uq_repositories_owner_lower_name', table_name='repositories')
