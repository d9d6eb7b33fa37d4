"""services: one row per long-lived service process (predictor, Aim UI), shared by API processes;
evaluations lose their pid and socket (an Aim UI's process is its services row)

Revision ID: c2341f741f82
Revises: 5b7c1e0d9a42
Create Date: 2026-12-05 14:22:01.828976
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c2341f741f82'
down_revision: str | None = '5b7c1e0d9a42'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'services',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('owner_key', sa.String(length=400), nullable=False),
        sa.Column('training_id', sa.Integer(), nullable=True),
        sa.Column('repo_id', sa.Integer(), nullable=True),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('socket', sa.String(length=300), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('info', sa.JSON(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'],
                                name=op.f('fk_services_repo_id_repositories'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['training_id'], ['trainings.id'],
                                name=op.f('fk_services_training_id_trainings'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_services')),
        sa.UniqueConstraint('kind', 'owner_key', name=op.f('uq_services_kind')),
    )
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_services_repo_id'), ['repo_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_services_training_id'), ['training_id'],
                              unique=False)
    # A running Aim UI of the old kind has no services row any API process would find: its
    # evaluation reads as expired and is started again on demand.
    op.execute("UPDATE evaluations SET status = 'expired' "
               "WHERE status IN ('starting', 'running')")
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_column('pid')
        batch_op.drop_column('socket')


def downgrade() -> None:
    op.execute("UPDATE evaluations SET status = 'expired' "
               "WHERE status IN ('starting', 'running')")
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('socket', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('pid', sa.Integer(), nullable=True))
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_services_training_id'))
        batch_op.drop_index(batch_op.f('ix_services_repo_id'))
    op.drop_table('services')
