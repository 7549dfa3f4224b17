"""A process remembers the key snapshots it read: a known key's request goes straight to its
admission script, which checks that the snapshot and the routes are still what Redis holds. An
edit, a revoke or a route change made anywhere still reaches the very next request."""

from __future__ import annotations

import threading

import pytest
import redis as redis_lib

from app.billing import key_lifecycle, quota, ratelimit
from app.routing import catalog
from tests.api.helpers import chat_body
from tests.conftest import REDIS_DB, REDIS_URL


class Monitor:
    """The commands the test's Redis database receives, from Redis's own MONITOR."""

    SENTINEL = "relaygate-monitor-end"

    def __init__(self) -> None:
        self.commands: list[str] = []
        self._client = redis_lib.Redis.from_url(REDIS_URL)
        self._monitor = self._client.monitor().__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        for event in self._monitor.listen():
            if int(event.get("db", -1)) != REDIS_DB or event.get("client_type") == "lua":
                continue  # another test database, or a command a script ran
            if self.SENTINEL in event["command"]:
                return
            self.commands.append(event["command"].split(" ", 1)[0].upper())

    def stop(self) -> list[str]:
        self._client.echo(self.SENTINEL)  # on the test database: the last command MONITOR reports
        self._thread.join(10)
        self._monitor.__exit__(None, None, None)
        self._client.close()
        return self.commands


def post(client, key, body=None, **kwargs):
    return client.post(
        "/v1/chat/completions", json=body or chat_body(), headers={"Authorization": f"Bearer {key}"}, **kwargs
    )


def window_count(app, redis, key_id: int) -> int:
    return redis.zcard(ratelimit.window_key(app.config["BILLING_REDIS_PREFIX"], key_id))


def held(app, redis, key_id: int) -> int:
    return int(redis.hget(quota.acct_key(app.config["BILLING_REDIS_PREFIX"], key_id), "held") or 0)


def test_a_known_key_is_admitted_without_a_look_up_trip(client, make_key, fake):
    _, key = make_key()
    assert post(client, key).status_code == 200  # the first request reads the key
    monitor = Monitor()
    for stream in (False, True, False):
        response = post(client, key, chat_body(stream=stream))
        assert response.status_code == 200
        response.get_data()
    commands = monitor.stop()
    assert "MGET" not in commands
    assert "GET" not in commands
    assert commands.count("EVALSHA") == 6  # per request: admission (with its guard) and settlement


def test_a_revoke_reaches_the_next_request_of_a_process_that_remembers_the_key(app, client, redis, make_key, fake):
    row, key = make_key()
    assert post(client, key).status_code == 200
    counted = window_count(app, redis, row.id)
    key_lifecycle.revoke_key(row)
    response = post(client, key)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_api_key"
    assert window_count(app, redis, row.id) == counted  # the refused request was not admitted
    assert held(app, redis, row.id) == 0
    assert len(fake.requests) == 1


@pytest.mark.parametrize("body", [b"{not json", b'{"model": "deepseek-v4-flash", "messages": "x"}'])
def test_a_revoked_key_with_a_bad_body_gets_its_401_not_the_body_error(app, client, redis, make_key, fake, body):
    row, key = make_key()
    assert post(client, key).status_code == 200
    counted = window_count(app, redis, row.id)
    key_lifecycle.revoke_key(row)
    response = client.post(
        "/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert window_count(app, redis, row.id) == counted


def test_model_permissions_changed_elsewhere_apply_to_the_next_request(app, client, redis, make_key, fake):
    row, key = make_key(models=["deepseek-v4-pro"])
    assert post(client, key, chat_body(model="deepseek-v4-pro")).status_code == 200
    assert post(client, key).status_code == 404  # flash: not allowed
    key_lifecycle.update_key(row, allowed_models=["deepseek-v4-flash", "deepseek-v4-pro"])
    assert post(client, key).status_code == 200  # allowed now, though this process knew otherwise
    key_lifecycle.update_key(row, allowed_models=["deepseek-v4-pro"])
    refused = post(client, key)
    assert refused.status_code == 404
    assert "deepseek-v4-pro" in refused.json["error"]["message"]
    assert [seen.body["model"] for seen in fake.requests] == ["deepseek-v4-pro", "deepseek-v4-flash"]


def test_a_route_change_reaches_the_next_request(app, client, redis, make_key, fake):
    row, key = make_key()
    assert post(client, key).status_code == 200
    catalog.set_route("deepseek-v4-flash", enabled=False)
    response = post(client, key)
    assert response.status_code == 404
    assert held(app, redis, row.id) == 0
    catalog.set_route("deepseek-v4-flash", enabled=True, completion_multiplier=2 * 10_000)
    assert post(client, key).status_code == 200
    assert len(fake.requests) == 2


def test_a_new_quota_reaches_the_next_request(app, client, redis, make_key, fake):
    row, key = make_key(tokens=1)  # less than any prompt
    assert post(client, key).status_code == 402
    key_lifecycle.topup_key(row, 1_000_000)
    assert post(client, key).status_code == 200
