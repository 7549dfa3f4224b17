"""An https upstream, as DeepSeek is: verified against UPSTREAM_CA_FILE, kept alive, and refused
when its certificate is not trusted."""

from __future__ import annotations

import openai
import pytest

from tests.api.helpers import chat_body, content_of, json_events, post_stream, read_sse
from tests.conftest import UPSTREAM_SECRET
from tests.fake_deepseek import FakeDeepSeek, FakeServer
from tests.tls import self_signed, server_context


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def fake_server(tls_files):
    server = FakeServer(FakeDeepSeek(api_key=UPSTREAM_SECRET), ssl_context=server_context(*tls_files)).start()
    assert server.base_url.startswith("https://")
    yield server
    server.stop()


@pytest.fixture
def app_extra(request, tls_files):
    trusted = getattr(request, "param", True)
    return {"UPSTREAM_CA_FILE": str(tls_files[0])} if trusted else {}


def test_answers_and_streams_come_through_a_verified_https_upstream(live_server, api_key, fake, app):
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0, timeout=30)
    for _ in range(3):
        result = sdk.chat.completions.create(
            model="deepseek-v4-flash", messages=[{"role": "user", "content": "Hi"}], extra_body={"fake": {"tokens": 4}}
        )
        assert result.usage.completion_tokens == 4
    response = post_stream(live_server.url, api_key, chat_body(stream=True, fake={"tokens": 6}))
    events, _, _ = read_sse(response)
    assert response.status_code == 200
    assert content_of(json_events(events))
    assert len(fake.requests) == 4
    chat_url = f"{app.config['UPSTREAM_BASE_URL']}/chat/completions"
    assert app.extensions["relay_pool"].idle_count(chat_url) == 1  # one connection carried all four


@pytest.mark.parametrize("app_extra", [False], indirect=True)
def test_an_upstream_whose_certificate_is_not_trusted_gets_nothing_and_the_client_a_502(live_server, api_key, fake):
    response = post_stream(live_server.url, api_key, chat_body(stream=False))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert UPSTREAM_SECRET not in response.text
    assert fake.requests == []  # the key never went out over an unverified connection
