"""Operator CLI: exact output forms and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess

import pytest

from app.billing.key_format import looks_like_key
from app.extensions import db
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
        (["models", "add-target", "deepseek-v4-flash"], "--upstream"),
        (["models", "add-target", "nope", "--upstream", "deepseek"], "no model 'nope'"),
        (["models", "add-target", "deepseek-v4-flash", "--upstream", "nope"], "no upstream named"),
        (["models", "add-target", "deepseek-v4-flash", "--upstream", "deepseek", "--weight", "0"], "--weight"),
        (["models", "add-target", "deepseek-v4-flash", "--upstream", "deepseek", "--priority", "x"], "--priority"),
        (["models", "add-target", "deepseek-v4-flash", "--upstream", "deepseek", "--extra-body", "[1]"], "JSON"),
        (["models", "remove-target", "deepseek-v4-flash", "--upstream", "deepseek"], "only target"),
        (["models", "show", "nope"], "no model 'nope'"),
        (["upstreams", "set", "deepseek", "--max-concurrency", "-1"], "max concurrency"),
        (["upstreams", "set", "deepseek", "--max-concurrency", "many"], "--max-concurrency"),
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
    assert "deepseek-v4-flash" in out and "deepseek-v4-pro" in out and "x2/x0.0667/x2" in out
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
    assert (route.upstream_model, route.extra_body, route.completion_multiplier_e4) == (
        "deepseek-flash",
        {"thinking": {"type": "disabled"}},
        30_000,
    )
    assert run(runner, "models", "set", "roleplay", "--upstream-model", "deepseek-v4-flash").exit_code == 0


def test_models_set_takes_exact_decimal_multipliers(runner, app):
    result = run(
        runner,
        "models",
        "set",
        "deepseek-v4-flash",
        "--prompt-multiplier",
        "1.5",
        "--cache-hit-multiplier",
        "0.02",
        "--completion-multiplier",
        "0.0001",
    )
    assert result.exit_code == 0, result.output
    assert "miss/hit/completion x1.5/x0.02/x0.0001" in result.output
    db.session.expire_all()
    route = ModelRoute.query.filter_by(public_id="deepseek-v4-flash").one()
    assert (route.prompt_multiplier_e4, route.cache_hit_multiplier_e4, route.completion_multiplier_e4) == (
        15_000,
        200,
        1,
    )
    shown = run(runner, "models", "show", "deepseek-v4-flash").output
    assert "prompt x1.5, cache hit x0.02, completion x0.0001" in shown
    assert json.loads(run(runner, "models", "show", "deepseek-v4-flash", "--json").output)["cache_hit_multiplier"] == (
        "0.02"
    )
    assert run(runner, "models", "set", "deepseek-v4-flash", "--cache-hit-multiplier", "0").exit_code == 0
    # a new DeepSeek route without one gets DeepSeek's hit/miss price ratio (Pro: 1/30, rounded up)
    assert (
        run(runner, "models", "set", "big", "--upstream-model", "deepseek-v4-pro", "--prompt-multiplier", "2").exit_code
        == 0
    )
    assert ModelRoute.query.filter_by(public_id="big").one().cache_hit_multiplier_e4 == 667


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--prompt-multiplier", "0.00001", "more than 4 decimals"),
        ("--prompt-multiplier", "-1", "cannot be negative"),
        ("--prompt-multiplier", "0", "must be more than 0"),
        ("--completion-multiplier", "NaN", "finite"),
        ("--completion-multiplier", "two", "must be a number"),
        ("--cache-hit-multiplier", "-0.02", "cannot be negative"),
        ("--cache-hit-multiplier", "1e4", "at most 1000"),
    ],
)
def test_models_set_refuses_a_multiplier_it_cannot_store_exactly(runner, app, option, value, message):
    result = runner.invoke(args=["models", "set", "deepseek-v4-flash", option, value])
    assert result.exit_code == 2 and message in result.output, result.output
    db.session.expire_all()
    route = ModelRoute.query.filter_by(public_id="deepseek-v4-flash").one()
    assert (route.prompt_multiplier_e4, route.cache_hit_multiplier_e4, route.completion_multiplier_e4) == (
        10_000,
        200,
        10_000,
    )


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


def test_a_model_pool_is_built_shown_and_taken_apart(runner, app):
    for name in ("second", "third"):
        assert run(runner, "upstreams", "set", name, "--base-url", f"https://{name}.example").exit_code == 0
    assert run(runner, "upstreams", "set", "second", "--max-concurrency", "4").exit_code == 0
    result = run(runner, "models", "add-target", "deepseek-v4-flash", "--upstream", "second", "--priority", "5")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "deepseek-v4-flash -> second:deepseek-v4-flash (priority 5, weight 1)"
    args = ["--upstream", "third", "--upstream-model", "ds-flash", "--weight", "3"]
    assert run(runner, "models", "add-target", "deepseek-v4-flash", *args).exit_code == 0
    shown = json.loads(run(runner, "models", "show", "deepseek-v4-flash", "--json").output)
    assert [(t["upstream"], t["upstream_model"], t["priority"], t["weight"]) for t in shown["targets"]] == [
        ("second", "deepseek-v4-flash", 5, 1),
        ("deepseek", "deepseek-v4-flash", 0, 1),
        ("third", "ds-flash", 0, 3),
    ]
    assert [(t["state"], t["in_flight"], t["max_concurrency"]) for t in shown["targets"]] == [
        ("healthy", 0, 4),
        ("healthy", None, None),
        ("healthy", None, None),
    ]
    table = run(runner, "models", "show", "deepseek-v4-flash").output
    assert "second" in table and "0/4" in table and "healthy" in table
    # the first target goes: the model's own upstream becomes the best one left
    assert run(runner, "models", "remove-target", "deepseek-v4-flash", "--upstream", "deepseek").exit_code == 0
    route = ModelRoute.query.filter_by(public_id="deepseek-v4-flash").one()
    assert (route.upstream.name, sorted(t.upstream.name for t in route.targets)) == ("second", ["second", "third"])
    # models set keeps editing that first target
    assert run(runner, "models", "set", "deepseek-v4-flash", "--upstream-model", "flash-2").exit_code == 0
    shown = json.loads(run(runner, "models", "show", "deepseek-v4-flash", "--json").output)
    assert [t["upstream_model"] for t in shown["targets"]] == ["flash-2", "ds-flash"]


def test_an_account_the_gateway_disabled_shows_so_and_comes_back_when_enabled(runner, app, redis):
    from app.models import Upstream
    from app.routing import catalog, health

    upstream = Upstream.query.filter_by(name="deepseek").one()
    assert health.disable(redis, "rg", upstream.id, "Insufficient Balance")
    catalog.mark_disabled(upstream.id, "Insufficient Balance")
    shown = json.loads(run(runner, "models", "show", "deepseek-v4-pro", "--json").output)
    assert (shown["targets"][0]["state"], shown["targets"][0]["reason"]) == ("disabled", "Insufficient Balance")
    assert "disabled: Insufficient Balance" in run(runner, "upstreams", "list").output
    assert run(runner, "upstreams", "set", "deepseek", "--enable").exit_code == 0
    shown = json.loads(run(runner, "models", "show", "deepseek-v4-pro", "--json").output)
    assert shown["targets"][0]["state"] == "healthy"
    assert "disabled" not in run(runner, "upstreams", "list").output


def test_upstreams_low_balance_threshold_and_probe_now(runner, app, redis, fake):
    from app.models import Upstream
    from app.routing import catalog, health

    assert "warns below 20.00" in run(runner, "upstreams", "set", "deepseek", "--low-balance", "20").output
    upstream = Upstream.query.filter_by(name="deepseek").one()
    health.disable(redis, "rg", upstream.id, "Insufficient Balance")
    catalog.mark_disabled(upstream.id, "Insufficient Balance")
    assert run(runner, "upstreams", "probe").output.split() == ["deepseek", "ok"]
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    assert (upstream.status, upstream.balance_cents, upstream.low_balance_cents) == ("ok", 1234, 2000)
    assert upstream.low_balance_warned_at is not None  # 12.34 is below 20.00
    assert not redis.exists(health.state_key("rg", upstream.id))
    for bad in ("-3", "1.234", "lots"):
        result = run(runner, "upstreams", "set", "deepseek", "--low-balance", bad)
        assert result.exit_code == 2 and "--low-balance is an amount like 5 or 12.50" in result.output, bad
    assert run(runner, "upstreams", "set", "deepseek", "--low-balance", "off").exit_code == 0
    db.session.expire_all()
    assert db.session.get(Upstream, upstream.id).low_balance_cents is None
