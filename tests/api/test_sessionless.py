"""The bearer-key API never opens the browser session: no Vary: Cookie, no Set-Cookie, and a
session cookie sent along is ignored (it does not make the answer vary)."""

from __future__ import annotations

from tests.api.helpers import chat_body


def test_api_answers_do_not_vary_by_cookie(client, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    client.set_cookie("session", "eyJfcmVtZW1iZXIiOiJzZXQifQ.forged.cookie")
    for response in (
        client.get("/v1/models", headers=auth),
        client.post("/v1/chat/completions", json=chat_body(), headers=auth),
        client.get("/v1/models"),  # a 401 too
        client.get("/api/key", headers=auth),
        client.get("/healthz"),
    ):
        assert "Cookie" not in response.headers.get("Vary", ""), response.request.path
        assert "Set-Cookie" not in response.headers, response.request.path
    assert client.get("/").headers.get("Vary") == "Cookie"  # the store's pages do use it
