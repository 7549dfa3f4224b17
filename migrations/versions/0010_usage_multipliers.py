"""The multipliers each usage record was billed at (usage_records.*_multiplier_e4), so that a key's
statement can show the arithmetic of an old request after the model's prices changed. Rows written
before this revision have none (NULL).

Revision ID: 0010_usage_multipliers
Revises: 0009_upstream_probe
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_usage_multipliers"
down_revision = "0009_upstream_probe"
branch_labels = None
depends_on = None

_COLUMNS = ("prompt_multiplier_e4", "cache_hit_multiplier_e4", "completion_multiplier_e4")


def upgrade():
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        for name in _COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
