"""Fractional multipliers and a third one for DeepSeek cache hits.

The route multipliers become exact fixed point in 1/10,000 (app.models.multiplier.UNIT), in columns
named for the scale: x becomes x * 10,000, exactly. The new cache-hit multiplier starts at the prompt
multiplier times DeepSeek's cache-hit/cache-miss input price ratio for a deepseek-* model (1/30 for
a Pro model, 1/50 for the others, rounded up to the unit; see README, "Pricing and multipliers"),
and at the prompt multiplier for any other model, so that model's bills do not change.

Revision ID: 0007_fractional_multipliers
Revises: 0006_gift_codes
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_fractional_multipliers"
down_revision = "0006_gift_codes"
branch_labels = None
depends_on = None

UNIT = 10_000  # frozen here: the migration must not change if the app's unit ever does


def cache_hit_multiplier(upstream_model, prompt_e4):
    name = (upstream_model or "").lower()
    if not name.startswith("deepseek"):
        return prompt_e4
    hit, miss = (1, 30) if "pro" in name else (1, 50)
    return -(-prompt_e4 * hit // miss)


def upgrade():
    with op.batch_alter_table("model_routes", schema=None) as batch_op:
        for name in ("prompt_multiplier_e4", "cache_hit_multiplier_e4", "completion_multiplier_e4"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default=str(UNIT)))
    bind = op.get_bind()
    routes = sa.table(
        "model_routes",
        sa.column("id", sa.Integer), sa.column("upstream_model", sa.String),
        sa.column("prompt_multiplier", sa.Integer), sa.column("completion_multiplier", sa.Integer),
        sa.column("prompt_multiplier_e4", sa.Integer), sa.column("cache_hit_multiplier_e4", sa.Integer),
        sa.column("completion_multiplier_e4", sa.Integer),
    )
    for row in bind.execute(sa.select(routes)).all():
        prompt = row.prompt_multiplier * UNIT
        bind.execute(routes.update().where(routes.c.id == row.id).values(
            prompt_multiplier_e4=prompt,
            cache_hit_multiplier_e4=cache_hit_multiplier(row.upstream_model, prompt),
            completion_multiplier_e4=row.completion_multiplier * UNIT,
        ))
    with op.batch_alter_table("model_routes", schema=None) as batch_op:
        for name in ("prompt_multiplier_e4", "cache_hit_multiplier_e4", "completion_multiplier_e4"):
            batch_op.alter_column(name, server_default=None)
        batch_op.drop_column("prompt_multiplier")
        batch_op.drop_column("completion_multiplier")


def downgrade():
    # Whole multipliers only: a fraction rounds up (never below what the route charged), cache hits
    # go back to costing what misses do.
    with op.batch_alter_table("model_routes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prompt_multiplier", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("completion_multiplier", sa.Integer(), nullable=False, server_default="1"))
    op.execute(
        f"UPDATE model_routes SET prompt_multiplier = (prompt_multiplier_e4 + {UNIT - 1}) / {UNIT}, "
        f"completion_multiplier = (completion_multiplier_e4 + {UNIT - 1}) / {UNIT}"
    )
    with op.batch_alter_table("model_routes", schema=None) as batch_op:
        batch_op.alter_column("prompt_multiplier", server_default=None)
        batch_op.alter_column("completion_multiplier", server_default=None)
        batch_op.drop_column("completion_multiplier_e4")
        batch_op.drop_column("cache_hit_multiplier_e4")
        batch_op.drop_column("prompt_multiplier_e4")
