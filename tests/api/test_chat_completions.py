"""The relay end to end: openai SDK and raw HTTP against the app on a real socket, fake DeepSeek upstream."""

from __future__ import annotations

import json
import time

import openai
import pytest

from app.routing import catalog
from tests.api.helpers import chat_body, content_of, json_events, post_stream, read_sse
from tests.conftest import UPSTREAM_SECRET
from tests.fake_deepseek import WORDS


@pytest.fixture
def sdk(live_server, api_key):
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def expected_text(tokens: int = 5) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(tokens))


def test_non_stream_with_openai_sdk(sdk, fake):
    result = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"fake": {"reasoning": 3, "tokens": 4}},
    )
    assert result.choices[0].message.content == expected_text(4)
    assert result.model == "deepseek-v4-flash"
    assert not hasattr(result.choices[0].message, "reasoning_content") or not getattr(
        result.choices[0].message, "reasoning_content", None
    )
    assert result.usage.completion_tokens == 7
    seen = fake.requests[-1]
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"


def test_stream_with_openai_sdk_strips_reasoning_and_hides_usage(sdk, fake):
    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        extra_body={"fake": {"reasoning": 3, "tokens": 5}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(5)
    assert all(c.model == "deepseek-v4-flash" for c in chunks)
    assert all(not (c.choices and getattr(c.choices[0].delta, "reasoning_content", None)) for c in chunks)
    assert all(c.choices for c in chunks), "usage chunk must not reach a client that did not ask for it"
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


def test_stream_usage_chunk_passed_when_client_asks(sdk, fake):
    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {"tokens": 3}},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3


def test_every_request_field_passes_through_unchanged(live_server, api_key, fake):
    extra = {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "seed": 7,
        "n": 1,
        "logit_bias": {"42": -100},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "logprobs": False,
        "thinking": {"type": "enabled"},
        "reasoning_effort": "high",
        "presence_penalty": 0,
        "top_k": 40,
        "something_new": {"nested": [1, 2]},
    }
    body = chat_body(stream=False, **extra)
    response = post_stream(live_server.url, api_key, body)
    assert response.status_code == 200
    sent = fake.requests[-1].body
    for field, value in extra.items():
        assert sent[field] == value, field
    assert sent["messages"] == body["messages"]


def test_an_integer_beyond_64_bits_reaches_the_upstream_as_the_client_sent_it(live_server, api_key, fake):
    # Valid JSON that orjson refuses to write: the gateway passes it on instead of failing.
    body = chat_body(stream=False, seed=2**70)
    response = post_stream(live_server.url, api_key, body)
    assert response.status_code == 200, response.text
    assert fake.requests[-1].body["seed"] == 2**70


def test_route_maps_public_model_to_upstream_model(app, sdk, fake):
    catalog.set_route(
        "deepseek-v4-flash", upstream_model="deepseek-chat-v9", extra_body={"thinking": {"type": "disabled"}}
    )
    result = sdk.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "x"}])
    assert fake.requests[-1].body["model"] == "deepseek-chat-v9"
    assert fake.requests[-1].body["thinking"] == {"type": "disabled"}
    assert result.model == "deepseek-v4-flash"
    chunks = list(
        sdk.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert {c.model for c in chunks} == {"deepseek-v4-flash"}


def test_reasoning_passthrough_key_keeps_reasoning(live_server, make_key, fake):
    _, key = make_key(reasoning_passthrough=True)
    response = post_stream(live_server.url, key, chat_body(stream=True, fake={"reasoning": 2, "tokens": 2}))
    chunks = json_events(read_sse(response)[0])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "think0 think1 "
    response = post_stream(live_server.url, key, chat_body(fake={"reasoning": 2}))
    assert response.json()["choices"][0]["message"]["reasoning_content"] == "think0 think1"


def test_stream_is_incremental(live_server, api_key, fake):
    started = time.monotonic()
    response = post_stream(live_server.url, api_key, chat_body(stream=True, fake={"tokens": 10, "delay": 0.2}))
    events, times, _ = read_sse(response)
    chunks = json_events(events)
    first_content = next(t for t, c in zip(times, chunks, strict=False) if content_of([c]))
    assert first_content - started < 0.8
    assert times[-1] - started >= 2.0
    assert events[-1] == b"[DONE]"


def test_sse_framing_and_headers(live_server, api_key, fake):
    response = requests_post_gzip(
        live_server.url, api_key, chat_body(stream=True, fake={"crlf": True, "keepalives": 2})
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    events, _, raw = read_sse(response)
    assert content_of(json_events(events)) == expected_text(5)
    assert raw.endswith(b"data: [DONE]\n\n")
    frames = raw.split(b"\n\n")
    assert all(f.startswith((b"data: ", b": ")) for f in frames if f)


def requests_post_gzip(base_url, key, body):
    import requests

    return requests.post(
        f"{base_url}/v1/chat/completions",
        json=body,
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip, deflate, br"},
    )


def test_keepalive_comments_while_reasoning_is_stripped(app, live_server, api_key, fake):
    app.config["RELAY_KEEPALIVE_INTERVAL"] = 0.5
    response = post_stream(
        live_server.url, api_key, chat_body(stream=True, fake={"reasoning": 12, "delay": 0.2, "tokens": 1})
    )
    _, _, raw = read_sse(response)
    head = raw.split(b"data: ", 1)[0]
    assert head.count(b": keep-alive\n\n") >= 3, raw[:300]


def test_non_stream_tolerates_leading_blank_lines(sdk, fake):
    result = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"fake": {"leading_blank_lines": 3}},
    )
    assert result.choices[0].message.content == expected_text(5)


def test_first_event_timeout_ends_stream_with_error_event(app, live_server, api_key, fake):
    app.config["RELAY_FIRST_EVENT_TIMEOUT"] = 1.0
    started = time.monotonic()
    response = post_stream(live_server.url, api_key, chat_body(stream=True, fake={"silent": True}))
    events, _, _ = read_sse(response)
    assert time.monotonic() - started < 4
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_timeout"
    assert wait_closed(fake)


def test_idle_timeout_ignores_upstream_keepalive_comments(app, live_server, api_key, fake):
    app.config["RELAY_IDLE_TIMEOUT"] = 1.0
    started = time.monotonic()
    response = post_stream(
        live_server.url, api_key, chat_body(stream=True, fake={"stall_after": 2, "keepalive_every": 0.1})
    )
    events, _, _ = read_sse(response)
    assert 1.0 <= time.monotonic() - started < 4
    chunks = [json.loads(e) for e in events]
    assert content_of(chunks[:-1]) == expected_text(2)
    assert chunks[-1]["error"]["code"] == "upstream_timeout"


def wait_closed(fake, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fake.requests and fake.requests[-1].closed_early_at:
            return True
        time.sleep(0.05)
    return False


def test_upstream_error_mid_stream_becomes_one_error_event(sdk, fake):
    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"fake": {"error_event": "model crashed"}},
    )
    received = []
    with pytest.raises(openai.APIError, match="model crashed"):
        for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Hello"


def test_upstream_dropping_the_connection_mid_stream(live_server, api_key, fake):
    response = post_stream(live_server.url, api_key, chat_body(stream=True, fake={"drop_after": 2}))
    events, _, _ = read_sse(response)
    assert json.loads(events[-1])["error"]["code"] == "upstream_unavailable"
    assert b"[DONE]" not in events
