"""The public status page: what counts for and against the service, and the page itself after real
traffic through the relay (answers, upstream failures, a quota refusal)."""

from __future__ import annotations

import pytest

from app.billing import reconcile
from app.store import status
from app.store.status import State, Tally
from tests.api.helpers import chat_body


@pytest.mark.unit
@pytest.mark.parametrize(
    ("outcome", "status_code", "verdict"),
    [
        ("done", 200, True),
        ("client_closed", 499, True),  # the buyer pressed Stop: the service was answering
        ("upstream_error", 502, False),
        ("upstream_error", 503, False),
        ("upstream_error", 429, False),  # overloaded upstream
        ("timeout", 504, False),
        ("timeout", 408, False),
        ("upstream_error", 400, None),  # a request the upstream rejected as malformed
        ("upstream_error", 422, None),
        ("quota", 200, None),  # the buyer's balance ran out mid-answer
        ("something new", 200, None),
    ],
)
def test_what_counts_for_and_against_the_service(outcome, status_code, verdict):
    assert status.counts_for_service(outcome, status_code) is verdict


@pytest.mark.unit
@pytest.mark.parametrize(
    ("good", "bad", "state"),
    [
        (0, 0, State.QUIET),
        (3, 1, State.QUIET),  # four requests say nothing either way
        (5, 0, State.UP),
        (9, 1, State.UP),  # 90% is still up
        (8, 2, State.DEGRADED),
        (0, 5, State.DEGRADED),
    ],
)
def test_now_is_degraded_below_ninety_percent_with_enough_traffic(good, bad, state):
    assert status.state_of(Tally(good, bad)) is state


@pytest.mark.unit
def test_tally_adds_grouped_rows_and_leaves_the_buyers_own_refusals_out():
    rows = [("done", 200, 7), ("client_closed", 499, 1), ("upstream_error", 502, 2), ("quota", 200, 40)]
    assert status.tally(rows) == Tally(good=8, bad=2)
    assert Tally(8, 2).success_percent == 80.0 and Tally().success_percent is None


def test_the_page_shows_each_model_after_real_traffic_and_names_no_account(app, client, make_key, fake, redis):
    _, key = make_key(1_000_000)
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(4):
        assert client.post("/v1/chat/completions", json=chat_body(), headers=auth).status_code == 200
    streamed = client.post("/v1/chat/completions", json=chat_body(stream=True), headers=auth)
    assert b"[DONE]" in streamed.get_data()
    for _ in range(3):
        fake.script(status=500)
        assert client.post("/v1/chat/completions", json=chat_body(), headers=auth).status_code == 502
    fake.script(status=400, error="Invalid max_tokens")  # the buyer's own mistake
    assert client.post("/v1/chat/completions", json=chat_body(), headers=auth).status_code == 400
    reconcile.drain(redis, app.config["BILLING_REDIS_PREFIX"], batch_size=100)
    status.forget()

    page = client.get("/status")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Service status" in html
    flash = html.split("<code>deepseek-v4-flash</code>", 1)[1].split("</section>", 1)[0]
    assert "Degraded" in flash and "62.5% succeeded" in flash and "of 8" in flash  # 5 answered, 3 failed
    assert "first token in" in flash and "median" in flash
    pro = html.split("<code>deepseek-v4-pro</code>", 1)[1].split("</section>", 1)[0]
    assert "Little recent traffic" in pro and "no requests" in pro
    assert "Some requests are failing right now." in html
    for secret in ('deepseek"', fake_url(app), app.config["UPSTREAM_API_KEY"], key[:16]):
        assert secret not in html
    assert page.headers["Content-Security-Policy"]  # a store page like the others

    chinese = client.get("/status?lang=zh").get_data(as_text=True)
    assert "服务状态" in chinese and "异常" in chinese and "中位数" in chinese
    assert 'href="/status"' in client.get("/").get_data(as_text=True)  # linked from every store page


def fake_url(app):
    return app.config["UPSTREAM_BASE_URL"]
