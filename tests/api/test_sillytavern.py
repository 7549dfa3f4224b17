"""What SillyTavern (Chat Completion → Custom) sends, and what its parser needs from our replies
(see shared/reference/sillytavern.md): node-fetch headers, `Connection: close`, its default body,
every event terminated by a blank line, every JSON chunk with a `choices` array."""

from __future__ import annotations

import json

import requests

from app.relay.sse import StreamDecoder

ST_HEADERS = {
    "Content-Type": "application/json",
    "accept": "*/*",
    "accept-encoding": "gzip, deflate, br",
    "user-agent": "node-fetch",
    "Connection": "close",
}
ST_BODY = {
    "messages": [
        {"role": "system", "content": "Write Seraphina's next reply in a fictional chat."},
        {"role": "system", "name": "example_user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},
        {"role": "assistant", "content": "Seraphina smiles"},
    ],
    "model": "deepseek-v4-flash",
    "temperature": 1,
    "max_tokens": 300,
    "stream": True,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "top_p": 1,
}


def test_connect_lists_models_and_an_empty_key_gets_a_clear_401(live_server, api_key):
    ok = requests.get(f"{live_server.url}/v1//models", headers={**ST_HEADERS, "Authorization": f"Bearer {api_key}"})
    assert "error" not in ok.json() and {m["id"] for m in ok.json()["data"]} == {"deepseek-v4-flash", "deepseek-v4-pro"}
    empty = requests.get(f"{live_server.url}/v1/models", headers={**ST_HEADERS, "Authorization": "Bearer "})
    assert empty.status_code == 401 and "No API key" in empty.json()["error"]["message"]


def test_stream_parses_the_way_sillytavern_parses(live_server, api_key, fake):
    response = requests.post(
        f"{live_server.url}/v1//chat/completions",  # a base URL saved with a trailing slash
        data=json.dumps({**ST_BODY, "fake": {"reasoning": 2, "tokens": 4}}),
        headers={**ST_HEADERS, "Authorization": f"Bearer {api_key}"},
        stream=True,
    )
    raw = b"".join(response.iter_content(chunk_size=None))
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert raw.endswith(b"\n\n")  # ST drops a final event that is not terminated
    events = StreamDecoder().feed(raw)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(isinstance(c.get("choices"), list) for c in chunks)  # ST <= 1.12.6 crashes otherwise
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there, traveller"
    assert all(c["choices"][0]["index"] == 0 for c in chunks if c["choices"])
    sent = fake.requests[-1].body
    assert sent["messages"] == ST_BODY["messages"] and sent["max_tokens"] == 300
