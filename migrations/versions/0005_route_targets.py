"""Upstream pools: a public model routes to several targets (route_targets), each upstream account
gets a concurrency limit and a status the gateway sets when the account is refused (401/402).
Every existing route becomes one target with priority 0 and weight 1.

Revision ID: 0005_route_targets
Revises: 0004_order_site_url
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005_route_targets"
down_revision = "0004_order_site_url"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="ok"))
        batch_op.add_column(sa.Column("status_reason", sa.String(length=300), nullable=False, server_default=""))
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        batch_op.alter_column("status", server_default=None)
        batch_op.alter_column("status_reason", server_default=None)
    op.create_table(
        "route_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("upstream_id", sa.Integer(), nullable=False),
        sa.Column("upstream_model", sa.String(length=120), nullable=False),
        sa.Column("extra_body", sa.JSON(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_id"], ["model_routes.id"], name=op.f("fk_route_targets_route_id_model_routes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["upstream_id"], ["upstreams.id"], name=op.f("fk_route_targets_upstream_id_upstreams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_targets")),
        sa.UniqueConstraint("route_id", "upstream_id", name=op.f("uq_route_targets_route_id")),
    )
    _one_target_per_route()


def _one_target_per_route():
    bind = op.get_bind()
    routes = sa.table(
        "model_routes",
        sa.column("id", sa.Integer), sa.column("upstream_id", sa.Integer),
        sa.column("upstream_model", sa.String), sa.column("extra_body", sa.JSON),
    )
    targets = sa.table(
        "route_targets",
        sa.column("route_id", sa.Integer), sa.column("upstream_id", sa.Integer),
        sa.column("upstream_model", sa.String), sa.column("extra_body", sa.JSON),
        sa.column("priority", sa.Integer), sa.column("weight", sa.Integer), sa.column("created_at", sa.DateTime),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    for row in bind.execute(sa.select(routes)).all():
        bind.execute(targets.insert().values(
            route_id=row.id, upstream_id=row.upstream_id, upstream_model=row.upstream_model,
            extra_body=row.extra_body or {}, priority=0, weight=1, created_at=now,
        ))


def downgrade():
    op.drop_table("route_targets")
    with op.batch_alter_table("upstreams", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
        batch_op.drop_column("status")
        batch_op.drop_column("max_concurrency")
