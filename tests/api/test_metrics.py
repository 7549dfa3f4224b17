"""GET /metrics: off unless the operator says who may scrape, and under real gunicorn workers the
counts of every worker add up to what the clients did and what the ledger billed."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.api.metrics import address_allowed, allowed_networks
from app.billing import reconcile
from app.extensions import db
from app.models import UsageRecord
from config import TestingConfig
from tests.api.helpers import chat_body
from tests.conftest import app_overrides

TOKEN = "scrape-token-for-tests"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("setting", "address", "allowed"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("192.168.1.5, ::1", "::1", True),
        ("192.168.1.5, ::1", "192.168.1.6", False),
        ("192.168.1.5", None, False),
        ("192.168.1.5", "not an address", False),
        ("", "127.0.0.1", False),
    ],
)
def test_allow_list(setting, address, allowed):
    assert address_allowed(address, allowed_networks(setting)) is allowed


@pytest.mark.unit
def test_a_malformed_allow_list_is_refused_not_read_as_open():
    with pytest.raises(ValueError):
        allowed_networks("10.0.0.0/8, everyone")
    assert allowed_networks(" 10.0.0.0/8 ,") == (ipaddress.ip_network("10.0.0.0/8"),)


def test_metrics_are_off_until_the_operator_says_who_may_scrape(app, client):
    assert client.get("/metrics").status_code == 404
    app.config["METRICS_TOKEN"] = TOKEN
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and scraped.mimetype == "text/plain"
    assert b"relaygate_requests_total" in scraped.data
    app.config.update(METRICS_TOKEN=None, METRICS_ALLOW="127.0.0.0/8")  # the test client is 127.0.0.1
    assert client.get("/metrics").status_code == 200


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def test_every_workers_counts_add_up_to_what_clients_did_and_the_ledger_billed(
    app, make_key, fake, gunicorn_factory, redis
):
    server = gunicorn_factory(workers=2, METRICS_TOKEN=TOKEN)
    row, key = make_key(1_000_000)
    headers = {"Authorization": f"Bearer {key}"}

    def chat(body: dict) -> int:
        response = requests.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        response.content  # noqa: B018 - read to the end, so that the stream settles
        return response.status_code

    bodies = [chat_body(stream=i % 2 == 0, content=f"question {i}") for i in range(12)]
    bodies += [chat_body(fake={"status": 500}) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(chat, bodies))
    assert statuses.count(200) == 12 and statuses.count(502) == 3

    scrape = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    found = samples(scrape.text)
    model = {"model": "deepseek-v4-flash"}
    assert total(found, "relaygate_requests_total", status="200", **model) == 12
    assert total(found, "relaygate_requests_total", status="502", **model) == 3
    assert total(found, "relaygate_stream_endings_total", reason="done", **model) == 6
    assert total(found, "relaygate_request_duration_seconds_count", **model) == 15
    assert total(found, "relaygate_time_to_first_token_seconds_count", **model) >= 6
    assert total(found, "relaygate_requests_in_flight") == 0
    assert ("relaygate_usage_outbox_length", ()) in found

    reconcile.drain(redis, app.config["BILLING_REDIS_PREFIX"], batch_size=100)
    db.session.expire_all()
    records = db.session.execute(db.select(UsageRecord).filter_by(api_key_id=row.id)).scalars().all()
    assert total(found, "relaygate_tokens_billed_total", **model) == sum(r.billed_tokens for r in records)
    reported = sum(u["prompt_tokens"] + u["completion_tokens"] for u in (s.usage for s in fake.requests) if u)
    assert total(found, "relaygate_upstream_tokens_total", **model) == reported
    assert len({pid for pid in server.worker_pids()}) == 2


def test_behind_a_trusted_proxy_the_allow_list_sees_the_real_client_and_a_forged_header_does_not_help(
    db_url, fake_server
):
    def client(**settings):
        app = create_app(TestingConfig, app_overrides(db_url, fake_server.base_url, **settings))
        return app.test_client()

    forged = {"X-Forwarded-For": "203.0.113.9"}
    direct = client(METRICS_ALLOW="203.0.113.0/24")
    assert direct.get("/metrics", headers=forged).status_code == 404  # no proxy trusted: 127.0.0.1 asked
    behind = client(METRICS_ALLOW="203.0.113.0/24", TRUSTED_PROXIES=1)
    assert behind.get("/metrics", headers=forged).status_code == 200
    assert behind.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 404
