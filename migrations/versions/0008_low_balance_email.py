"""The optional low-balance email: who asked for it on each key (api_keys.low_balance_*), which
quota's alert was claimed and which was emailed, and the checkbox of an order (orders.low_balance_alert).

Revision ID: 0008_low_balance_email
Revises: 0007_fractional_multipliers
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_low_balance_email"
down_revision = "0007_fractional_multipliers"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("low_balance_email", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("low_balance_locale", sa.String(length=8), nullable=False, server_default="en"))
        batch_op.add_column(sa.Column("low_balance_alerted_quota", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("low_balance_emailed_quota", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("low_balance_alert", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("low_balance_alert")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("low_balance_emailed_quota")
        batch_op.drop_column("low_balance_alerted_quota")
        batch_op.drop_column("low_balance_locale")
        batch_op.drop_column("low_balance_email")
