"""evaluations of a repository (compare its trainings): repo_id, training_id optional

Revision ID: 34e961118074
Revises: a8661aa57585
Create Date: 2026-11-25 18:37:33.060501
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '34e961118074'
down_revision: str | None = 'a8661aa57585'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repo_id', sa.Integer(), nullable=True))
        batch_op.alter_column('training_id', existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_unique_constraint(batch_op.f('uq_evaluations_repo_id'), ['repo_id'])
        batch_op.create_foreign_key(batch_op.f('fk_evaluations_repo_id_repositories'),
                                    'repositories', ['repo_id'], ['id'], ondelete='CASCADE')
        batch_op.create_check_constraint(batch_op.f('ck_evaluations_one_subject'),
                                         '(training_id IS NULL) <> (repo_id IS NULL)')


def downgrade() -> None:
    op.execute('DELETE FROM evaluations WHERE training_id IS NULL')
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_evaluations_one_subject'), type_='check')
        batch_op.drop_constraint(batch_op.f('fk_evaluations_repo_id_repositories'),
                                 type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_evaluations_repo_id'), type_='unique')
        batch_op.alter_column('training_id', existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column('repo_id')
