"""The pool probe: each upstream account's last balance (minor units, exact), a low-balance threshold
and when its warning went out, the last probe's time and error; and a small settings table for the
operator's notice on the public status page.

Revision ID: 0009_upstream_probe
Revises: 0008_low_balance_email
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_upstream_probe"
down_revision = "0008_low_balance_email"
branch_labels = None
depends_on = None

_NULLABLE = (
    ("balance_cents", sa.BigInteger()),
    ("balance_checked_at", sa.DateTime()),
    ("low_balance_cents", sa.BigInteger()),
    ("low_balance_warned_at", sa.DateTime()),
    ("probed_at", sa.DateTime()),
)
_TEXT = (("balance_currency", 8), ("probe_error", 300))


def upgrade():
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        for name, type_ in _NULLABLE:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        for name, length in _TEXT:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=False, server_default=""))
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        for name, _length in _TEXT:
            batch_op.alter_column(name, server_default=None)
    op.create_table(
        "settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
    )


def downgrade():
    op.drop_table("settings")
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        for name, _type in reversed(_TEXT + _NULLABLE):
            batch_op.drop_column(name)
