"""What an attacker or an unlucky client sends, through the real stack: the balance bounds the
spend whatever the request says, no hold outlives a failure, and every ending bills one rule."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.billing import quota, reconcile, tokenizer
from app.extensions import db
from app.models import ApiKey, UsageRecord
from app.relay.bounds import prompt_token_bound
from app.relay.sse import StreamDecoder
from app.relay.usage import estimate_prompt_tokens
from app.routing import catalog
from tests.api.helpers import chat_body, content_of, json_events, post_stream, read_sse, send_raw_request
from tests.conftest import wait_until
from tests.fake_deepseek import prompt_tokens_of

P = "rg"


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def live(redis, key_id):
    return {k.decode(): int(v) for k, v in redis.hgetall(quota.acct_key(P, key_id)).items() if k != b"seen"}


def settled(redis, key_id, timeout=10.0):
    """The key's billed tokens once no request holds anything."""
    wait_until(lambda: live(redis, key_id).get("held", 0) == 0, timeout=timeout)
    state = live(redis, key_id)
    return state.get("synced", 0) + state.get("pending", 0)


def records():
    db.session.expire_all()
    return db.session.execute(db.select(UsageRecord)).scalars().all()


def post_many(url, key, bodies, stream=False):
    def one(body):
        response = requests.post(f"{url}/v1/chat/completions", json=body, headers=auth(key), timeout=60)
        response.content  # noqa: B018 - read to the end, so that streams settle
        return response

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


# -- 1. every field the hold depends on is checked before anything is held --------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("max_tokens", 100000.0, "invalid_type"),
        ("max_tokens", "100000", "invalid_type"),
        ("max_tokens", True, "invalid_type"),
        ("max_tokens", [100], "invalid_type"),
        ("max_tokens", 0, "integer_below_min_value"),
        ("max_tokens", -5, "integer_below_min_value"),
        ("max_completion_tokens", 1.5, "invalid_type"),
        ("max_completion_tokens", "50000", "invalid_type"),
        ("max_completion_tokens", {"value": 1}, "invalid_type"),
        ("n", 2.0, "invalid_type"),
        ("n", 0, "integer_below_min_value"),
        ("stream_options", "include_usage", "invalid_type"),
    ],
)
def test_a_token_field_of_the_wrong_type_is_a_400_naming_it_and_nothing_is_held(
    client, redis, make_key, fake, field, value, code
):
    row, key = make_key(40_000)
    for stream in (False, True):
        body = chat_body(stream=stream, fake={"tokens": 100_000, "ignore_max_tokens": True}) | {field: value}
        response = client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert response.status_code == 400, response.get_data()
        error = response.get_json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", field, code)
        assert f"'{field}'" in error["message"]
    assert fake.requests == []  # the upstream never saw it
    assert settled(redis, row.id) == 0
    assert records() == []


def test_null_token_limits_mean_unset(client, make_key, fake):
    _, key = make_key(1_000_000)
    body = chat_body(max_tokens=None, max_completion_tokens=None, n=None, stream_options=None)
    assert client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 200
    assert fake.requests[-1].body["max_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_is_a_400_and_leaves_no_hold_behind(client, redis, make_key, fake, stream):
    body = chat_body(stream=stream, fake={"tokens": 3})
    row, key = make_key(prompt_token_bound(body) + 50)  # room for one request at a time
    raw = json.dumps(body | {"messages": [{"role": "user", "content": "PLACEHOLDER"}]}).replace(
        "PLACEHOLDER", "hi \\ud800"
    )
    response = client.post("/v1/chat/completions", data=raw, headers=auth(key) | {"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].content", "invalid_text")
    assert live(redis, row.id).get("held", 0) == 0
    ok = client.post("/v1/chat/completions", json=body, headers=auth(key))  # at once, not an hour later
    ok.get_data()
    assert ok.status_code == 200


def test_a_surrogate_pair_is_valid_text(client, make_key, fake):
    _, key = make_key(1_000_000)
    raw = json.dumps(chat_body(content="PLACEHOLDER")).replace("PLACEHOLDER", "smile \\ud83d\\ude00")
    response = client.post("/v1/chat/completions", data=raw, headers=auth(key) | {"Content-Type": "application/json"})
    assert response.status_code == 200
    assert fake.requests[-1].body["messages"][0]["content"] == "smile \U0001f600"


# -- 2. the prompt is held at a bound no text can beat ---------------------------------------------


def test_concurrent_prompts_of_one_letter_words_cannot_overspend_a_key(app, redis, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    row, key = make_key(40_000, rpm=1000)
    # 15,000 one-letter words are 15,000 tokens to DeepSeek, far above 0.3 tokens a character.
    body = chat_body(content="a " * 15_000, max_tokens=1, fake={"tokens": 1, "prompt_tokens": 15_000})
    responses = post_many(server.url, key, [body] * 4)
    statuses = sorted(r.status_code for r in responses)
    answered = statuses.count(200)
    assert 1 <= answered <= 2 and statuses.count(402) == 4 - answered, statuses  # 40,000 pays for two at most
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == "insufficient_quota"
    assert settled(redis, row.id) == answered * 15_001 <= row.tokens_quota


def test_the_last_tokens_of_a_key_still_pay_for_a_long_conversation(client, redis, make_key, fake):
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()[:20_000]
    body = chat_body(content=text, fake={"tokens": 5, "prompt_tokens": 1000})
    counted = tokenizer.prompt_token_bound(body, 10**7)
    assert counted * 3 < prompt_token_bound(body)  # bytes alone would need three times as much
    body["fake"]["prompt_tokens"] = counted - 20  # what DeepSeek counts, a little under our bound (same digits)
    row, key = make_key(counted + 5)
    response = client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert response.status_code == 200, response.get_json()
    assert fake.requests[-1].body["max_tokens"] == 5
    assert settled(redis, row.id) == counted - 20 + 5 <= row.tokens_quota
    again = client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert again.status_code == 402


# -- 3. no upstream is trusted to honour max_tokens ------------------------------------------------


@pytest.mark.parametrize("passthrough", [False, True], ids=["reasoning-stripped", "reasoning-passed-through"])
def test_streams_that_outrun_max_tokens_are_cut_at_the_balance(
    app, redis, make_key, fake, gunicorn_factory, passthrough
):
    server = gunicorn_factory(workers=2)
    row, key = make_key(10_000, rpm=1000, reasoning_passthrough=passthrough)
    body = chat_body(stream=True, max_tokens=10, fake={"reasoning": 200_000, "tokens": 5, "ignore_max_tokens": True})
    responses = post_many(server.url, key, [body] * 3)
    assert [r.status_code for r in responses] == [200, 200, 200]
    cut = [r for r in responses if b"insufficient_quota" in r.content]
    assert cut, "no stream was stopped although the key could not pay for them"
    for response in cut:
        events = [e for e in response.content.split(b"\n\n") if e.startswith(b"data: ")]
        last = json.loads(events[-1][len(b"data: ") :])
        assert last["error"]["code"] == "insufficient_quota"
    wait_until(lambda: all(s.closed_early_at or s.finished_at for s in fake.requests))
    assert any(s.closed_early_at for s in fake.requests)  # the upstream was hung up on
    used = settled(redis, row.id)
    assert used <= row.tokens_quota
    if passthrough:  # the client got the reasoning it was cut from: it pays for what it got
        assert used > 0
    else:  # nothing reached the client: nothing billed
        assert used == 0


def test_an_answer_longer_than_the_first_hold_extends_it_and_is_billed_exactly(client, redis, make_key, fake):
    body = chat_body(stream=True, fake={"tokens": 3000})  # past the first QUOTA_HOLD_STEP (2048)
    row, key = make_key(prompt_token_bound(body) + 3100)  # only just enough, so every extension must fit
    events = list(StreamDecoder().feed(client.post("/v1/chat/completions", json=body, headers=auth(key)).get_data()))
    assert events[-1] == b"[DONE]"
    assert len(json_events(events)) > 3000
    assert settled(redis, row.id) == prompt_tokens_of(body) + 3000


def test_a_long_answer_at_a_fractional_multiplier_extends_its_hold_in_whole_tokens(client, redis, make_key, fake):
    """0.3 billed tokens per completion token: each extension is rounded up as the first hold, and
    a key with little more than the bill's worth gets the whole answer, billed ceil(prompt + 3,001 x 0.3)."""
    catalog.set_route("deepseek-v4-flash", completion_multiplier=3_000)
    body = chat_body(stream=True, fake={"tokens": 3001})
    row, key = make_key(prompt_token_bound(body) + 930)  # 3,100 tokens' worth, as the test above allows
    events = list(StreamDecoder().feed(client.post("/v1/chat/completions", json=body, headers=auth(key)).get_data()))
    assert events[-1] == b"[DONE]"
    assert len(json_events(events)) > 3001
    assert settled(redis, row.id) == prompt_tokens_of(body) + 901


# -- 5. holds do not lock out honest concurrency ---------------------------------------------------


def test_a_hundred_concurrent_streams_on_a_big_key_all_get_answers(app, redis, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    row, key = make_key(2_000_000, rpm=1000)
    body = chat_body(stream=True, fake={"tokens": 200, "delay": 0.005})
    responses = post_many(server.url, key, [body] * 100)
    assert [r.status_code for r in responses] == [200] * 100
    assert all(r.content.rstrip().endswith(b"data: [DONE]") for r in responses)
    assert settled(redis, row.id) == 100 * (prompt_tokens_of(body) + 200)


def test_a_402_says_what_is_used_held_and_left(client, redis, make_key, fake, live_server):
    slow = chat_body(stream=True, fake={"tokens": 40, "delay": 0.05})
    row, key = make_key(prompt_token_bound(slow) + 2048 + 5)  # too little for any other prompt
    running = post_stream(live_server.url, key, slow)
    wait_until(lambda: live(redis, row.id).get("held", 0) > 0)
    refused = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert refused.status_code == 402
    assert refused.status == "402 Tokens Held By Running Requests"
    assert refused.headers["x-should-retry"] == "true"
    message = refused.get_json()["error"]["message"]
    held = live(redis, row.id)["held"]
    assert f"used 0 of its {row.tokens_quota:,} tokens" in message
    assert f"{held:,} are held by 1 request still running" in message
    read_sse(running)
    settled(redis, row.id)
    again = client.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert again.status_code == 200  # the running request used less than it held


# -- 7. one rule for every ending -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_before_the_upstream_answers_pays_nothing(
    app, redis, make_key, fake, live_server, stream
):
    row, key = make_key(1_000_000)
    # Non-stream: the fake sends its headers only with the whole answer, 3 s later.
    body = chat_body(stream=stream, fake={"tokens": 30, "delay": 0.1, "keepalives": 0})
    if stream:
        body["fake"] |= {"silent": True}
    sock = send_raw_request(live_server.port, key, body)
    wait_until(lambda: fake.requests)
    time.sleep(0.3)
    sock.close()
    hung_up = time.monotonic()
    wait_until(lambda: live(redis, row.id).get("held", 0) == 0, timeout=5)
    assert time.monotonic() - hung_up < 2  # noticed while the upstream was still working
    reconcile.drain(redis, P, batch_size=10)
    (record,) = records()
    assert (record.outcome, record.billed_tokens, record.status_code) == (
        "client_closed",
        0,
        499 if not stream else 200,
    )
    assert settled(redis, row.id) == 0


def test_a_stream_that_fails_after_only_role_and_reasoning_pays_nothing(app, redis, make_key, fake, live_server):
    app.config["RELAY_IDLE_TIMEOUT"] = 0.6
    row, key = make_key(1_000_000)
    body = chat_body(stream=True, fake={"reasoning": 5, "stall_after": 0, "keepalive_every": 0.1})
    events, _, _ = read_sse(post_stream(live_server.url, key, body))
    chunks = json_events(events)
    assert chunks[-1]["error"]["code"] == "upstream_timeout"
    assert content_of(chunks[:-1]) == ""
    assert settled(redis, row.id) == 0
    reconcile.drain(redis, P, batch_size=10)
    (record,) = records()
    assert (record.outcome, record.billed_tokens) == ("timeout", 0)


def test_a_stream_stopped_after_some_content_pays_the_prompt_and_what_it_received(
    app, redis, make_key, fake, live_server
):
    row, key = make_key(1_000_000)
    body = chat_body(stream=True, fake={"tokens": 400, "delay": 0.02})
    response = post_stream(live_server.url, key, body)
    received = b""
    for chunk in response.iter_content(chunk_size=None):
        received += chunk
        if received.count(b'"content":"') >= 10:
            break
    response.close()
    wait_until(lambda: live(redis, row.id).get("pending", 0) > 0 and live(redis, row.id).get("held") == 0, timeout=5)
    reconcile.drain(redis, P, batch_size=10)
    (record,) = records()
    assert record.outcome == "client_closed"
    assert record.prompt_tokens == estimate_prompt_tokens(body)
    assert 10 <= record.completion_tokens < 400
    assert record.billed_tokens == record.prompt_tokens + record.completion_tokens


# -- read your own writes ---------------------------------------------------------------------------


def test_the_balance_read_right_after_a_stream_ends_includes_it(app, redis, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    row, key = make_key(1_000_000)
    # An upstream (or a proxy before it) that keeps the connection a moment after [DONE].
    body = chat_body(stream=True, fake={"tokens": 3, "linger_after_done": 0.3})
    per_request = prompt_tokens_of(body) + 3
    for i in range(1, 6):
        with requests.Session() as chat, requests.Session() as other:
            response = chat.post(f"{server.url}/v1/chat/completions", json=body, headers=auth(key), stream=True)
            seen = b""
            for chunk in response.iter_content(chunk_size=None):
                seen += chunk
                if b"[DONE]" in seen:
                    break
            report = other.get(f"{server.url}/api/key", headers=auth(key), timeout=10).json()
            response.close()
        assert report["tokens_used"] == i * per_request, f"request {i} was not billed yet"


def test_the_sql_ledger_matches_what_was_billed(app, client, redis, make_key, fake):
    row, key = make_key(1_000_000)
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json=chat_body(stream=stream), headers=auth(key))
        response.get_data()
    reconcile.drain(redis, P, batch_size=10)
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).tokens_used == sum(r.billed_tokens for r in records()) > 0


def test_a_key_with_nothing_left_is_refused_without_counting_its_prompt(client, make_key, fake):
    _, key = make_key(0)
    body = chat_body(content="x y " * 60_000)  # 240 KB, under TOKENIZE_MAX_BYTES: counting it takes ~0.1 s
    tokenizer.prompt_token_bound(chat_body(), 10**6)  # loaded, so that only counting could take time
    started = time.perf_counter()
    for _ in range(5):
        assert client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 402
    refusing = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(5):
        tokenizer.prompt_token_bound(body, 10**6)
    counting = time.perf_counter() - started
    # compared on the same machine at the same moment, so a busy CI box cannot tip it
    assert refusing < counting / 2, (refusing, counting)
