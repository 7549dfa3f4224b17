"""Gift codes: single-use codes for a plan, stored as a SHA-256 and a display prefix (gift_codes).

Revision ID: 0006_gift_codes
Revises: 0005_route_targets
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_gift_codes"
down_revision = "0005_route_targets"
branch_labels = None
depends_on = None

_INDEXED = ("batch", "plan_id", "status", "created_at", "api_key_id")


def upgrade():
    op.create_table(
        "gift_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("batch", sa.String(length=16), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(), nullable=True),
        sa.Column("redeemed_kind", sa.String(length=8), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name=op.f("fk_gift_codes_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_gift_codes_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gift_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_gift_codes_code_hash")),
    )
    with op.batch_alter_table("gift_codes", schema=None) as batch_op:
        for column in _INDEXED:
            batch_op.create_index(batch_op.f(f"ix_gift_codes_{column}"), [column], unique=False)


def downgrade():
    with op.batch_alter_table("gift_codes", schema=None) as batch_op:
        for column in reversed(_INDEXED):
            batch_op.drop_index(batch_op.f(f"ix_gift_codes_{column}"))
    op.drop_table("gift_codes")
