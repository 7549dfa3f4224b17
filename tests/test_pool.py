"""The upstream pool end to end: gunicorn with two gevent workers, real Redis, and a pool of fake
DeepSeek servers on loopback, each failing its own way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gevent
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.billing import reconcile
from app.extensions import db
from app.models import AdminUser, Upstream, UsageRecord
from app.relay.usage import estimate_prompt_tokens
from app.routing import catalog, health, probe
from app.routing.pool import BreakerPolicy
from tests.api.helpers import chat_body, content_of, json_events, post_stream, read_sse
from tests.conftest import free_port, time_limit, wait_until
from tests.fake_deepseek import FakeDeepSeek, FakeServer
from tests.orders.racing import wait_for_workers
from tests.shop import mail, smtp_server  # noqa: F401 - the real SMTP sink
from tests.smtp_sink import SmtpSink, text_of

TEST_SECONDS = 60


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """No test here runs longer than TEST_SECONDS, whatever hangs."""
    with time_limit(TEST_SECONDS):
        yield


P = "rg"
ENV = {
    "RELAY_CONNECT_TIMEOUT": "1",
    "RELAY_HEADER_TIMEOUT": "2",  # generous: a healthy fake on a busy 2-core machine must never miss it
    "RELAY_IDLE_TIMEOUT": "1",
    "POOL_MAX_ATTEMPTS": "6",
    "POOL_FAILOVER_SECONDS": "20",
    "POOL_BREAKER_FAILURES": "2",
    "POOL_BREAKER_SECONDS": "60",
    "KEY_DEFAULT_RPM": "1000",
}


class Scripted(FakeDeepSeek):
    """A fake DeepSeek that behaves one way on every request (a `fake` option in the body wins)."""

    def __init__(self, **defaults: Any) -> None:
        super().__init__()
        self.defaults = defaults

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].endswith("/chat/completions"):  # not the probe's GET /models
            self.script(**self.defaults)
        return super().__call__(environ, start_response)


class SlowHeaders:
    """Answers, but only after `seconds`: later than the gateway waits for headers."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.requests: list[float] = []  # when each arrived
        self.inner = FakeDeepSeek()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.requests.append(time.monotonic())
        gevent.sleep(self.seconds)
        return self.inner(environ, start_response)


class ErrorIn200:
    """HTTP 200 with an error object: the whole body, or a stream's first event."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
        self.requests.append(body)
        error = {"error": {"message": "Service is too busy", "type": "server_error"}}
        if body.get("stream"):
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            return [b"data: " + json.dumps(error).encode() + b"\n\n"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(error).encode()]


class Counting:
    """Counts the requests the wrapped fake is working on (from arrival until its last byte is
    handed to the socket), and the most there ever were at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            body = self.inner(environ, start_response)
        except BaseException:
            self._done()
            raise
        return self._body(iter(body))

    def _body(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        done = False
        try:
            chunk = next(chunks, None)
            while chunk is not None:
                following = next(chunks, None)
                if following is None:
                    done = True
                    self._done()  # the answer is complete: the upstream's work on it is over
                yield chunk
                chunk = following
        finally:
            if not done:
                self._done()

    def _done(self) -> None:
        with self._lock:
            self.now -= 1


@pytest.fixture
def servers() -> Iterator[dict[str, FakeServer]]:
    broke = Scripted(status=402, error="Insufficient Balance")
    broke.set_account(total="0.00", available=False)  # what DeepSeek's balance says of an empty account
    started = {
        "broke": FakeServer(broke).start(),
        "slow": FakeServer(SlowHeaders(6.0)).start(),  # type: ignore[arg-type]
        "err200": FakeServer(ErrorIn200()).start(),  # type: ignore[arg-type]
        "healthy": FakeServer(Counting(Scripted(tokens=5))).start(),  # type: ignore[arg-type]
        "stall": FakeServer(Scripted(tokens=50, stall_after=2, keepalive_every=0.2)).start(),
    }
    yield started
    for server in started.values():
        server.stop()


def _pool(servers: dict[str, FakeServer]) -> dict[str, str]:
    """deepseek-v4-flash: four failing accounts preferred (priority 10), the healthy one as the
    fallback; deepseek-v4-pro: the account whose streams stall."""
    urls = {name: server.base_url for name, server in servers.items()}
    urls["refused"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name, url in urls.items():
        catalog.set_upstream(name, base_url=url, api_key=f"sk-{name}-0000")
    catalog.set_route("deepseek-v4-flash", upstream_name="healthy")
    for name in ("refused", "broke", "slow", "err200"):
        catalog.set_target("deepseek-v4-flash", name, priority=10)
    catalog.set_route("deepseek-v4-pro", upstream_name="stall")
    return urls


def _post(server: Any, key: str, body: dict[str, Any]) -> requests.Response:
    if body.get("stream"):
        response = post_stream(server.url, key, body, timeout=30)
        if response.status_code == 200:
            response.events = read_sse(response)[0]  # type: ignore[attr-defined]
        return response
    return requests.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _answer(response: requests.Response) -> str:
    if hasattr(response, "events"):
        assert response.events[-1] == b"[DONE]", response.events  # type: ignore[attr-defined]
        return content_of(json_events(response.events))  # type: ignore[attr-defined]
    return response.json()["choices"][0]["message"]["content"]


def _upstream_id(name: str) -> int:
    return db.session.execute(db.select(Upstream.id).filter_by(name=name)).scalar_one()


def _records() -> list[UsageRecord]:
    db.session.expire_all()
    return db.session.execute(db.select(UsageRecord).order_by(UsageRecord.id)).scalars().all()


def _admins() -> None:
    for i, active in enumerate((True, True, False)):  # the third has left: no email
        admin = AdminUser(email=f"ops{i}@example.com", active=active)
        admin.set_password("correct horse battery")
        db.session.add(admin)
    db.session.commit()


def test_failing_accounts_are_skipped_disabled_and_broken_off_and_each_request_billed_once(
    app,
    redis,
    make_key,
    servers,
    gunicorn_factory,
    celery_worker_factory,
    mail: SmtpSink,  # noqa: F811
):
    _pool(servers)
    _admins()
    server = gunicorn_factory(workers=2, METRICS_TOKEN="scrape", **ENV)
    celery_worker_factory(**mail.env(), MAIL_FROM="RelayGate <ops@relay.test>")
    _, key = make_key(1_000_000)
    started = time.monotonic()

    # The first two requests meet every failing account (the second opens their breakers).
    first = [_post(server, key, chat_body(stream=s)) for s in (True, False)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        rest = list(pool.map(lambda i: _post(server, key, chat_body(stream=i % 2 == 0)), range(16)))
    responses = first + rest
    assert [r.status_code for r in responses] == [200] * 18
    assert {_answer(r) for r in responses} == {"Hello there, traveller."}
    assert time.monotonic() - started < 25

    # 402: out at once, for both workers, and the row says so.
    broke_id = _upstream_id("broke")
    assert len(servers["broke"].fake.requests) == 1
    assert redis.hget(health.state_key(P, broke_id), "disabled")
    db.session.expire_all()
    row = db.session.get(Upstream, broke_id)
    assert (row.status, row.status_reason) == ("disabled", "Insufficient Balance")
    # Refused, slow and error-in-200: two failures each opened the breaker; nothing since.
    assert len(servers["slow"].fake.requests) == 2
    assert len(servers["err200"].fake.requests) == 2
    refused_state = redis.hgetall(health.state_key(P, _upstream_id("refused")))
    assert int(refused_state[b"failures"]) == 2 and float(refused_state[b"open_until"]) > time.time()
    healthy = servers["healthy"].fake
    assert len(healthy.inner.requests) == 18  # every request answered once, by the healthy account

    # A stream that stalls after its first tokens: no retry, an error event, a partial bill.
    stalled_body = chat_body(stream=True, model="deepseek-v4-pro")
    stalled = _post(server, key, stalled_body)
    events = json_events(stalled.events)
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert content_of(events) == "Hello there"
    assert len(servers["stall"].fake.requests) == 1

    reconcile.drain(redis, P, batch_size=100)
    records = _records()
    assert len(records) == len({r.request_id for r in records}) == 19  # billed once per request
    done = [r for r in records if r.model == "deepseek-v4-flash"]
    reported = [s.usage for s in healthy.inner.requests]
    assert all(r.outcome == "done" for r in done)
    assert sorted(r.billed_tokens for r in done) == sorted(
        u["prompt_tokens"] + u["completion_tokens"] for u in reported
    )
    (cut,) = [r for r in records if r.model == "deepseek-v4-pro"]
    assert cut.outcome == "timeout"
    assert 1 <= cut.completion_tokens < 50
    assert cut.billed_tokens == 2 * (estimate_prompt_tokens(stalled_body) + cut.completion_tokens)  # pro bills 2x

    # What an operator's dashboard sees, added up over both workers.
    scraped = requests.get(f"{server.url}/metrics", headers={"Authorization": "Bearer scrape"}, timeout=10).text
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }

    def metric(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items())

    assert metric("relaygate_circuit_openings_total", upstream="broke", reason="disabled") == 1
    for name in ("refused", "slow", "err200"):  # two failures opened each breaker, once
        assert metric("relaygate_circuit_openings_total", upstream=name, reason="breaker") == 1, name
        assert metric("relaygate_failovers_total", upstream=name) == 2, name
    assert metric("relaygate_failovers_total", upstream="broke") == 1
    assert metric("relaygate_requests_total", upstream="healthy", status="200") == 18
    assert metric("relaygate_stream_endings_total", model="deepseek-v4-pro", reason="timeout") == 1
    assert metric("relaygate_requests_in_flight") == 0

    # The public status page: the failovers cost no buyer an answer, so the model is up; no account is named.
    page = requests.get(f"{server.url}/status", timeout=10).text
    flash = page.split("<code>deepseek-v4-flash</code>", 1)[1].split("</section>", 1)[0]
    assert "state up" in flash and "100.0% succeeded" in flash
    secrets = [f"sk-{name}-0000" for name in servers] + [s.base_url for s in servers.values()] + ["err200", "stall"]
    assert not any(secret in page for secret in secrets)

    # Every admin still with us was emailed about the 402, once: one disable, however many workers saw it.
    mail.wait_for(2)
    wait_for_workers(redis)
    assert sorted(m["To"] for m in mail.messages) == ["ops0@example.com", "ops1@example.com"]
    alert = text_of(mail.messages[0])
    assert "took the upstream account broke out of service" in alert and "Insufficient Balance" in alert
    assert "sk-broke-0000" not in alert

    # The probe: still empty, so it stays out; topped up, it is back, and takes the traffic it is preferred for.
    assert probe.probe_upstreams()["broke"] == probe.EMPTY
    servers["broke"].fake.set_account(total="50.00")
    servers["broke"].fake.defaults = {"tokens": 5}
    verdicts = probe.probe_upstreams()
    assert (verdicts["broke"], verdicts["slow"], verdicts["refused"]) == (probe.OK, "unreachable", "unreachable")
    assert not redis.exists(health.state_key(P, broke_id))
    db.session.expire_all()
    row = db.session.get(Upstream, broke_id)
    assert (row.status, row.balance_text) == ("ok", "50.00 USD")
    healed = [_post(server, key, chat_body(stream=i % 2 == 0)) for i in range(4)]
    assert {_answer(r) for r in healed} == {"Hello there, traveller."}
    assert len(servers["broke"].fake.requests) == 1 + 4 and len(healthy.inner.requests) == 18
    assert len(mail.messages) == 2  # coming back sends nothing


def test_an_account_never_has_more_requests_in_flight_than_its_limit(app, redis, make_key, gunicorn_factory):
    fake = Counting(Scripted(tokens=5, delay=0.2))  # a non-stream answer sends its headers after 1 s
    upstream = FakeServer(fake).start()  # type: ignore[arg-type]
    try:
        catalog.set_upstream("small", base_url=upstream.base_url, api_key="sk-small-0000", max_concurrency=3)
        catalog.set_route("deepseek-v4-flash", upstream_name="small")
        server = gunicorn_factory(workers=2, **{**ENV, "RELAY_HEADER_TIMEOUT": "5", "POOL_QUEUE_SECONDS": "1.5"})
        _, key = make_key(1_000_000)
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda i: _post(server, key, chat_body(stream=i % 2 == 0)), range(20)))
    finally:
        upstream.stop()
    statuses = [r.status_code for r in responses]
    assert fake.peak == 3, (fake.peak, statuses)
    # The first three always get a slot; how many more finish within the queue wait depends on the
    # machine's speed (six on a quiet one), so the limit, not a throughput, is what is asserted.
    assert statuses.count(200) >= 3, statuses
    assert set(statuses) <= {200, 503}
    for response in (r for r in responses if r.status_code == 503):
        assert response.headers["Retry-After"] == "2"
        assert response.json()["error"]["code"] == "upstream_unavailable"
    assert redis.zcard(health.leases_key(P, _upstream_id("small"))) == 0  # every slot given back

    def drained() -> int:
        reconcile.drain(redis, P, batch_size=100)
        return len(_records())

    wait_until(lambda: drained() == 20, timeout=10)  # the refused ones too, billed nothing
    assert sum(r.billed_tokens for r in _records() if r.status_code == 503) == 0


@pytest.fixture
def app_extra() -> dict[str, Any]:
    return {
        "RELAY_HEADER_TIMEOUT": 0.5,
        "RELAY_FIRST_EVENT_TIMEOUT": 1.5,
        "RELAY_KEEPALIVE_INTERVAL": 0.2,
        "POOL_PROBE_TIMEOUT": 1.0,  # the slow account (6 s) holds the probe up no longer
    }


def test_an_upstream_that_only_sends_keepalives_is_alive_not_failed_over(app, client, fake, api_key):
    catalog.set_upstream("second", base_url=f"http://127.0.0.1:{free_port()}")  # would fail if tried
    catalog.set_target("deepseek-v4-flash", "second")
    response = client.post(
        "/v1/chat/completions",
        json=chat_body(stream=True, fake={"silent": True, "keepalive_every": 0.1}),
        headers={"Authorization": f"Bearer {api_key}"},
        buffered=True,
    )
    assert response.status_code == 200
    assert len(fake.requests) == 1  # kept, though nothing but comments came for longer than the header wait
    events = [json.loads(e[len("data: ") :]) for e in response.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1]["error"]["code"] == "upstream_timeout"  # the first-event timeout, as before


def test_a_model_whose_accounts_are_all_out_of_service_answers_503(app, client, redis, fake, api_key):
    health.disable(redis, P, _upstream_id("deepseek"), "Authentication Fails")
    response = client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json["error"]["code"] == "upstream_unavailable"
    assert fake.requests == []


def test_a_half_open_breaker_lets_a_trial_through_and_a_success_closes_it(app, client, redis, fake, api_key):
    upstream_id = _upstream_id("deepseek")
    health.record_failure(redis, P, upstream_id, time.time() - 60, BreakerPolicy(1, 10.0, 10.0))  # open until 50 s ago
    assert redis.hget(health.state_key(P, upstream_id), "failures") == b"1"
    response = client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200 and len(fake.requests) == 1
    assert redis.hgetall(health.state_key(P, upstream_id)) == {}  # closed: no failures counted
    assert not redis.exists(health.trial_key(P, upstream_id))


def test_the_usage_record_names_the_model_of_the_account_that_answered(app, client, redis, fake, api_key):
    catalog.set_upstream("dead", base_url=f"http://127.0.0.1:{free_port()}")  # refuses connections
    catalog.set_target("deepseek-v4-flash", "dead", priority=10, upstream_model="deepseek-dead-model")
    catalog.set_target("deepseek-v4-flash", "deepseek", upstream_model="deepseek-chat")
    response = client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    assert fake.requests[-1].body["model"] == "deepseek-chat"  # the fallback account's own model name
    reconcile.drain(redis, P, batch_size=10)
    (record,) = _records()
    assert (record.model, record.upstream_model) == ("deepseek-v4-flash", "deepseek-chat")
