"""`flask db upgrade` builds exactly the schema the models describe, and seeds the defaults."""

from __future__ import annotations

import os
import subprocess

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.extensions import db
from tests.conftest import ROOT


def _clean(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        db.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def _upgrade(url: str, *target: str, command: str = "upgrade") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "APP_ENV")}
    env.update(
        {
            "DATABASE_URL": url,
            "UPSTREAM_BASE_URL": "https://up.example/",
            "UPSTREAM_API_KEY": "sk-seeded-9876",
            "SECRET_KEY": "migration-test",
        }
    )
    return subprocess.run(
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "db", command, *target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_upgrade_matches_models_and_seeds(tmp_path):
    url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    _clean(url)
    try:
        result = _upgrade(url)
        assert result.returncode == 0, result.stderr[-3000:]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert diffs == [], diffs
            upstream = conn.execute(sa.text("SELECT name, base_url, api_key_encrypted, key_hint FROM upstreams")).one()
            routes = conn.execute(
                sa.text(
                    "SELECT public_id, upstream_model, prompt_multiplier_e4, cache_hit_multiplier_e4, "
                    "completion_multiplier_e4 FROM model_routes ORDER BY public_id"
                )
            ).all()
            plans = conn.execute(sa.text("SELECT name, tokens, price_cents, currency, active FROM plans")).all()
        engine.dispose()
        assert [tuple(p) for p in plans] == [("2M tokens", 2_000_000, 100, "USD", True)]
        assert upstream.name == "deepseek" and upstream.base_url == "https://up.example"
        assert "sk-seeded" not in upstream.api_key_encrypted and upstream.key_hint == "9876"
        # multipliers in 1/10,000; cache hits at DeepSeek's hit/miss price ratio (Flash 1/50, Pro 1/30)
        assert [tuple(r) for r in routes] == [
            ("deepseek-v4-flash", "deepseek-v4-flash", 10_000, 200, 10_000),
            ("deepseek-v4-pro", "deepseek-v4-pro", 20_000, 667, 20_000),
        ]
    finally:
        _clean(url)


def test_whole_multipliers_become_exact_fixed_point_and_come_back(tmp_path):
    """0007 on a database with routes of its own: every multiplier is converted exactly, cache hits
    get DeepSeek's ratio on deepseek-* models and cost what misses do elsewhere; downgrading gives
    the whole multipliers back."""
    url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'older.sqlite3'}"
    _clean(url)
    try:
        result = _upgrade(url, "0006_gift_codes")
        assert result.returncode == 0, result.stderr[-3000:]
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE model_routes SET prompt_multiplier = 3, completion_multiplier = 7"))
            upstream_id = conn.execute(sa.text("SELECT id FROM upstreams")).scalar_one()
            for public_id, model, prompt, completion in (
                ("roleplay", "deepseek-chat", 5, 1),
                ("other", "gpt-4o-mini", 2, 8),
                ("big", "deepseek-v4-pro", 1000, 1000),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO model_routes (public_id, upstream_id, upstream_model, extra_body, "
                        "prompt_multiplier, completion_multiplier, owned_by, description, enabled, created_at, "
                        "updated_at) VALUES (:p, :u, :m, '{}', :pm, :cm, 'x', '', true, :now, :now)"
                    ),
                    {"p": public_id, "u": upstream_id, "m": model, "pm": prompt, "cm": completion, "now": "2026-01-01"},
                )
        result = _upgrade(url, "0007_fractional_multipliers")
        assert result.returncode == 0, result.stderr[-3000:]
        query = (
            "SELECT public_id, prompt_multiplier_e4, cache_hit_multiplier_e4, completion_multiplier_e4 "
            "FROM model_routes ORDER BY public_id"
        )
        with engine.connect() as conn:
            routes = [tuple(r) for r in conn.execute(sa.text(query))]
        assert routes == [
            ("big", 10_000_000, 333_334, 10_000_000),  # 1000 x 1/30, rounded up to 1/10,000
            ("deepseek-v4-flash", 30_000, 600, 70_000),
            ("deepseek-v4-pro", 30_000, 1_000, 70_000),
            ("other", 20_000, 20_000, 80_000),  # not DeepSeek: a hit costs what a miss does, as before
            ("roleplay", 50_000, 1_000, 10_000),  # deepseek-chat is served by Flash
        ]
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE model_routes SET completion_multiplier_e4 = 5001 WHERE public_id = 'other'"))
        result = _upgrade(url, "0006_gift_codes", command="downgrade")
        assert result.returncode == 0, result.stderr[-3000:]
        with engine.connect() as conn:
            whole = dict(
                conn.execute(sa.text("SELECT public_id, completion_multiplier FROM model_routes")).tuples().all()
            )
        engine.dispose()
        assert whole == {"big": 1000, "deepseek-v4-flash": 7, "deepseek-v4-pro": 7, "other": 1, "roleplay": 1}
    finally:
        _clean(url)
