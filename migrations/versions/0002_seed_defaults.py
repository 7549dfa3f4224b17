"""Seed the default upstream (from UPSTREAM_BASE_URL / UPSTREAM_API_KEY), the two public routes and the
first plan ("$1 — 2M tokens").

Revision ID: 0002_seed_defaults
Revises: 0001_initial
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from flask import current_app

from app import secretbox

revision = "0002_seed_defaults"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

PLANS = (
    # name, Chinese name, tokens, price in cents, sort order
    ("2M tokens", "200 万 tokens", 2_000_000, 100, 10),
)
ROUTES = (
    # public id, upstream model, prompt x, completion x, description
    ("deepseek-v4-flash", "deepseek-v4-flash", 1, 1, "Fast; for chat and roleplay."),
    ("deepseek-v4-pro", "deepseek-v4-pro", 2, 2, "More capable; costs more tokens."),
)


def upgrade():
    bind = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)
    upstreams = sa.table(
        "upstreams",
        sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("base_url", sa.String),
        sa.column("api_key_encrypted", sa.Text), sa.column("key_hint", sa.String), sa.column("enabled", sa.Boolean),
        sa.column("created_at", sa.DateTime), sa.column("updated_at", sa.DateTime),
    )
    routes = sa.table(
        "model_routes",
        sa.column("public_id", sa.String), sa.column("upstream_id", sa.Integer), sa.column("upstream_model", sa.String),
        sa.column("extra_body", sa.JSON), sa.column("prompt_multiplier", sa.Integer),
        sa.column("completion_multiplier", sa.Integer), sa.column("owned_by", sa.String),
        sa.column("description", sa.String), sa.column("enabled", sa.Boolean),
        sa.column("created_at", sa.DateTime), sa.column("updated_at", sa.DateTime),
    )
    config = current_app.config
    api_key = config.get("UPSTREAM_API_KEY")
    bind.execute(upstreams.insert().values(
        name="deepseek", base_url=config["UPSTREAM_BASE_URL"].rstrip("/"),
        api_key_encrypted=secretbox.encrypt(api_key, config["SECRET_KEY"]) if api_key else None,
        key_hint=api_key[-4:] if api_key else "", enabled=True, created_at=now, updated_at=now,
    ))
    upstream_id = bind.execute(sa.select(upstreams.c.id).where(upstreams.c.name == "deepseek")).scalar_one()
    for public_id, upstream_model, p_mult, c_mult, description in ROUTES:
        bind.execute(routes.insert().values(
            public_id=public_id, upstream_id=upstream_id, upstream_model=upstream_model, extra_body={},
            prompt_multiplier=p_mult, completion_multiplier=c_mult, owned_by="deepseek", description=description,
            enabled=True, created_at=now, updated_at=now,
        ))
    plans = sa.table(
        "plans",
        sa.column("name", sa.String), sa.column("name_zh", sa.String), sa.column("tokens", sa.BigInteger),
        sa.column("price_cents", sa.Integer), sa.column("currency", sa.String), sa.column("active", sa.Boolean),
        sa.column("sort_order", sa.Integer), sa.column("created_at", sa.DateTime), sa.column("updated_at", sa.DateTime),
    )
    for name, name_zh, tokens, price_cents, sort_order in PLANS:
        bind.execute(plans.insert().values(
            name=name, name_zh=name_zh, tokens=tokens, price_cents=price_cents, currency="USD", active=True,
            sort_order=sort_order, created_at=now, updated_at=now,
        ))


def downgrade():
    op.execute("DELETE FROM plans")
    op.execute("DELETE FROM model_routes")
    op.execute("DELETE FROM upstreams")
