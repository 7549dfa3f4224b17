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


def _upgrade(url: str) -> subprocess.CompletedProcess:
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
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "db", "upgrade"],
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
                    "SELECT public_id, upstream_model, prompt_multiplier, completion_multiplier FROM model_routes "
                    "ORDER BY public_id"
                )
            ).all()
            plans = conn.execute(sa.text("SELECT name, tokens, price_cents, currency, active FROM plans")).all()
        engine.dispose()
        assert [tuple(p) for p in plans] == [("2M tokens", 2_000_000, 100, "USD", True)]
        assert upstream.name == "deepseek" and upstream.base_url == "https://up.example"
        assert "sk-seeded" not in upstream.api_key_encrypted and upstream.key_hint == "9876"
        assert [tuple(r) for r in routes] == [
            ("deepseek-v4-flash", "deepseek-v4-flash", 1, 1),
            ("deepseek-v4-pro", "deepseek-v4-pro", 2, 2),
        ]
    finally:
        _clean(url)
