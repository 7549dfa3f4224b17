from app.models import UsageRecord
from tests.conftest import wait_until


def test_usage_record_reaches_sql_through_a_real_worker(app, client, api_key, fake, celery_worker):
    response = client.post(
        "/v1/chat/completions",
        json={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200
    from app.extensions import db

    def written():
        db.session.rollback()
        return db.session.execute(db.select(UsageRecord)).scalars().all()

    rows = wait_until(written, timeout=15)
    assert rows[0].outcome == "done"


def test_gunicorn_serves_models(app, gunicorn_factory, api_key):
    import requests

    server = gunicorn_factory(workers=2)
    response = requests.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert response.status_code == 200
    assert {m["id"] for m in response.json()["data"]} == {"deepseek-v4-flash", "deepseek-v4-pro"}
