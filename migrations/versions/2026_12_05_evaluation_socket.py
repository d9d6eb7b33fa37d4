"""evaluations: the Aim UI listens on a unix socket (socket) instead of a loopback port (port)

Revision ID: 5b7c1e0d9a42
Revises: 5b2f0c7d9e41
Create Date: 2026-12-05 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '5b7c1e0d9a42'
down_revision: str | None = '5b2f0c7d9e41'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A running Aim UI of the old kind listens on a port nothing will connect to any more:
    # its row reads as expired and is started again on demand.
    op.execute("UPDATE evaluations SET status = 'expired' "
               "WHERE status IN ('starting', 'running')")
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('socket', sa.String(length=300), nullable=True))
        batch_op.drop_column('port')


def downgrade() -> None:
    op.execute("UPDATE evaluations SET status = 'expired' "
               "WHERE status IN ('starting', 'running')")
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('port', sa.Integer(), nullable=True))
        batch_op.drop_column('socket')
