"""The usage log: filters by key, model, outcome, status and date; CSV export."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from app.extensions import db
from app.models import AuditLog, UsageRecord, utcnow
from tests.admin.conftest import add_usage


def _ids(admin, **args) -> set[str]:
    text = admin.get("/admin/usage", query_string=args).text
    return {rid for rid in ("r-a1", "r-a2", "r-b1", "r-old") if rid in text}


def _seed(make_key):
    a, _ = make_key(name="a")
    b, _ = make_key(name="b")
    add_usage(a.id, request_id="r-a1", billed_tokens=100)
    add_usage(
        a.id, request_id="r-a2", model="deepseek-v4-pro", outcome="upstream_error", status_code=502, billed_tokens=0
    )
    add_usage(b.id, request_id="r-b1", outcome="client_closed", billed_tokens=55)
    add_usage(b.id, request_id="r-old", created_at=datetime(2024, 3, 5, 12, 0), billed_tokens=7)
    return a, b


def test_filters_narrow_the_log(admin, make_key):
    a, b = _seed(make_key)
    assert _ids(admin) == {"r-a1", "r-a2", "r-b1", "r-old"}
    assert _ids(admin, key=str(a.id)) == {"r-a1", "r-a2"}
    assert _ids(admin, key=b.prefix[-6:]) == {"r-b1", "r-old"}
    assert _ids(admin, model="deepseek-v4-pro") == {"r-a2"}
    assert _ids(admin, outcome="client_closed") == {"r-b1"}
    assert _ids(admin, status="502") == {"r-a2"}
    assert _ids(admin, date_from="2024-03-05", date_to="2024-03-05") == {"r-old"}
    today = utcnow().date().isoformat()
    assert _ids(admin, date_from=today) == {"r-a1", "r-a2", "r-b1"}
    page = admin.get("/admin/usage", query_string={"key": str(a.id)}).text
    assert "2 requests · 100 billed tokens" in page


def test_bad_filters_say_what_is_wrong(admin, make_key):
    _seed(make_key)
    nobody = admin.get("/admin/usage", query_string={"key": "no-such-key"}).text
    assert "No single key matches" in nobody and "r-a1" not in nobody
    backwards = admin.get("/admin/usage", query_string={"date_from": "2025-02-01", "date_to": "2025-01-01"}).text
    assert "The end date is before the start date." in backwards
    garbled = admin.get("/admin/usage", query_string={"status": "abc", "date_from": "yesterday"})
    assert garbled.status_code == 200
    assert "Not a valid integer value." in garbled.text and "Not a valid date value." in garbled.text


def test_csv_export_follows_the_filters_and_is_audited(admin, make_key):
    a, _b = _seed(make_key)
    response = admin.get("/admin/usage.csv", query_string={"key": str(a.id)})
    assert response.status_code == 200
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["request_id"] for r in rows) == ["r-a1", "r-a2"]
    first = next(r for r in rows if r["request_id"] == "r-a2")
    assert first["key_prefix"] == a.prefix and first["status_code"] == "502" and first["outcome"] == "upstream_error"
    assert first["model"] == "deepseek-v4-pro" and first["created_at"].endswith("Z")
    entry = db.session.execute(db.select(AuditLog).filter_by(action="usage.export")).scalar_one()
    assert entry.details == {"key_id": a.id}


def test_csv_export_streams_many_rows(admin, make_key):
    row, _ = make_key()
    start = utcnow() - timedelta(hours=2)
    db.session.execute(
        db.insert(UsageRecord),
        [
            {
                "request_id": f"bulk-{i}",
                "api_key_id": row.id,
                "model": "deepseek-v4-flash",
                "upstream_model": "x",
                "stream": False,
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "reasoning_tokens": 0,
                "cached_tokens": 0,
                "billed_tokens": 2,
                "outcome": "done",
                "status_code": 200,
                "latency_ms": 1,
                "created_at": start,
            }
            for i in range(1203)
        ],
    )
    db.session.commit()
    lines = admin.get("/admin/usage.csv").text.strip().splitlines()
    assert len(lines) == 1204 and lines[0].startswith("created_at,request_id,key_id,key_prefix")
