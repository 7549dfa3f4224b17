"""Operator CLI: exact output forms and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess

import pytest

from app.billing.key_format import looks_like_key
from app.models import ApiKey, ModelRoute
from tests.conftest import ROOT, subprocess_env


def run(runner, *args):
    return runner.invoke(args=list(args))


def test_keys_create_prints_the_key_alone_on_the_last_line(runner, app):
    result = run(
        runner,
        "keys",
        "create",
        "--tokens",
        "2000000",
        "--rpm",
        "10",
        "--name",
        "alice",
        "--models",
        "deepseek-v4-flash",
        "--expires",
        "2030-01-31",
    )
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert looks_like_key(key)
    row = ApiKey.query.one()
    assert (row.tokens_quota, row.rpm, row.name, row.allowed_models) == (2_000_000, 10, "alice", ["deepseek-v4-flash"])
    assert row.expires_at.strftime("%Y-%m-%d") == "2030-01-31"
    assert key not in row.key_hash and row.prefix.startswith("sk-gateway-")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["keys", "create"], "--tokens"),
        (["keys", "create", "--tokens", "x"], "--tokens"),
        (["keys", "create", "--tokens", "-5"], "must not be negative"),
        (["keys", "create", "--tokens", "5", "--rpm", "0"], "--rpm"),
        (["keys", "create", "--tokens", "5", "--models", "gpt-4"], "unknown model"),
        (["keys", "create", "--tokens", "5", "--expires", "31/01/2030"], "YYYY-MM-DD"),
        (["keys", "show", "sk-gateway-nope"], "no key matches"),
        (["keys", "topup", "1", "--tokens", "0"], "positive"),
        (["models", "set", "new-model"], "--upstream-model is required"),
        (["models", "set", "deepseek-v4-flash", "--extra-body", "{bad"], "JSON"),
        (["models", "set", "deepseek-v4-flash", "--upstream", "nope"], "no upstream named"),
    ],
)
def test_wrong_input_exits_non_zero_with_one_line(runner, app, args, needle):
    result = run(runner, *args)
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.startswith(("Error", "Usage", "Try"))]
    assert needle in result.output
    assert any(line.startswith("Error:") for line in lines)


def test_keys_show_list_topup_revoke(runner, app, make_key):
    row, key = make_key(tokens=100, name="bob")
    shown = json.loads(run(runner, "keys", "show", key, "--json").output)
    assert shown["tokens_quota"] == 100 and shown["tokens_remaining"] == 100 and shown["status"] == "active"
    assert key not in json.dumps(shown)
    assert "bob" in run(runner, "keys", "list").output
    assert run(runner, "keys", "topup", key, "--tokens", "50").exit_code == 0
    assert json.loads(run(runner, "keys", "show", str(row.id), "--json").output)["tokens_quota"] == 150
    assert run(runner, "keys", "revoke", row.prefix).exit_code == 0
    assert json.loads(run(runner, "keys", "show", key, "--json").output)["status"] == "revoked"


def test_models_list_and_set(runner, app):
    out = run(runner, "models", "list").output
    assert "deepseek-v4-flash" in out and "deepseek-v4-pro" in out and "2/2" in out
    result = run(
        runner,
        "models",
        "set",
        "deepseek-v4-flash",
        "--upstream-model",
        "deepseek-flash",
        "--extra-body",
        '{"thinking": {"type": "disabled"}}',
        "--completion-multiplier",
        "3",
    )
    assert result.exit_code == 0, result.output
    route = ModelRoute.query.filter_by(public_id="deepseek-v4-flash").one()
    assert (route.upstream_model, route.extra_body, route.completion_multiplier) == (
        "deepseek-flash",
        {"thinking": {"type": "disabled"}},
        3,
    )
    assert run(runner, "models", "set", "roleplay", "--upstream-model", "deepseek-v4-flash").exit_code == 0


def test_upstream_key_is_stored_encrypted_and_never_printed(runner, app):
    result = run(runner, "upstreams", "set", "deepseek", "--api-key", "sk-live-abcdef123456")
    assert result.exit_code == 0
    listing = run(runner, "upstreams", "list").output
    assert "sk-live-abcdef123456" not in listing and "…3456" in listing
    from app.models import Upstream

    assert "sk-live" not in Upstream.query.filter_by(name="deepseek").one().api_key_encrypted


def test_real_cli_process_creates_a_key(app, db_url):
    result = subprocess.run(
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "keys", "create", "--tokens", "5"],
        cwd=ROOT,
        env=subprocess_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert looks_like_key(result.stdout.strip().splitlines()[-1])
    bad = subprocess.run(
        [str(ROOT / ".venv/bin/flask"), "--app", "wsgi", "keys", "create", "--tokens", "many"],
        cwd=ROOT,
        env=subprocess_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "Error:" in bad.stderr
