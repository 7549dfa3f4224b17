"""No database query on the hot path: keys and routes come from Redis and a per-process cache."""

from __future__ import annotations

from sqlalchemy import event

from app.extensions import db
from tests.api.helpers import chat_body


def test_warm_requests_run_no_sql(app, client, api_key, fake):
    headers = {"Authorization": f"Bearer {api_key}"}
    for body in (chat_body(), chat_body(stream=True)):  # warm: the first look-ups fill the caches
        assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        for body in (chat_body(), chat_body(stream=True), chat_body()):
            response = client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200
            response.get_data()
        assert client.get("/v1/models", headers=headers).status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert statements == []
