"""The address a buyer used, recorded with the order (orders.site_url), for links in its emails.

Revision ID: 0004_order_site_url
Revises: 0003_exactly_once
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_order_site_url"
down_revision = "0003_exactly_once"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site_url", sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("site_url")
