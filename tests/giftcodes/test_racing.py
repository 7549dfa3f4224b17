"""Exactly once: 20 submissions of one code at the same moment, from two gunicorn workers and four
more processes, give one new key, or credit an existing key once."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from app.extensions import db
from app.giftcodes import service
from app.models import ApiKey, AuditLog
from app.models.gift_code import GiftCode
from tests.admin.conftest import csrf_from
from tests.giftcodes.test_service import OPERATOR, make_plan
from tests.orders.racing import KEY, at_once


@pytest.fixture
def storefront(gunicorn_factory: Any, worker_env: dict[str, str]) -> Any:
    # Behind one trusted proxy, so that each simulated buyer has its own address (X-Forwarded-For).
    return gunicorn_factory(workers=2, TRUSTED_PROXIES="1", **worker_env)


def _browsers(url: str, count: int) -> list[tuple[requests.Session, str]]:
    opened = []
    for _ in range(count):
        session = requests.Session()
        opened.append((session, csrf_from(session.get(f"{url}/redeem", timeout=10).text)))
    return opened


def _submit_everywhere_at_once(storefront: Any, in_processes: Any, code: str, key: str = "") -> list[str]:
    """16 buyers on the gunicorn workers and 4 in other processes press Redeem at the same moment."""
    form = {"code": code, "kind": "topup" if key else "new", "key": key}

    def press(session: requests.Session, token: str, n: int) -> str:
        page = session.post(
            f"{storefront.url}/redeem",
            data={**form, "csrf_token": token},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
            timeout=30,
        )
        return f"{page.status_code} {'key' if KEY.search(page.text) else '-'}"

    browsers = _browsers(storefront.url, 16)
    presses = [lambda s=s, t=t, n=n: press(s, t, n) for n, (s, t) in enumerate(browsers)]
    pages: list[str] = []
    processes = in_processes(
        "tests.giftcodes.racing:submit_code",
        [(code, key)],
        prepare=("tests.orders.racing:browser", ("/redeem",)),
        meanwhile=lambda: pages.extend(at_once(presses)),
    )
    for session, _token in browsers:
        session.close()
    return pages + [result for results in processes for result in results]


def _generate(plan: Any) -> tuple[str, ...]:
    return service.generate(plan.id, 1, actor=OPERATOR).codes


def _one_redemption(code: str) -> GiftCode:
    db.session.expire_all()
    row = db.session.execute(db.select(GiftCode)).scalar_one()
    assert row.status == "redeemed"
    entries = db.session.execute(db.select(AuditLog).filter_by(action="giftcode.redeem")).scalars().all()
    assert [e.details["key_id"] for e in entries] == [row.api_key_id]
    return row


def test_twenty_submissions_of_one_code_at_once_create_exactly_one_key(app, storefront, in_processes):
    (code,) = _generate(make_plan())
    pages = _submit_everywhere_at_once(storefront, in_processes, code)

    assert sorted(pages) == ["200 key"] + ["410 -"] * 19, pages
    row = _one_redemption(code)
    keys = db.session.execute(db.select(ApiKey)).scalars().all()
    assert [(k.id, k.tokens_quota) for k in keys] == [(row.api_key_id, 3_000_000)]


def test_twenty_submissions_of_one_code_onto_a_key_at_once_credit_it_once(app, storefront, in_processes, make_key):
    row, key = make_key(tokens=1_000)
    (code,) = _generate(make_plan())
    pages = _submit_everywhere_at_once(storefront, in_processes, code, key)

    assert sorted(pages) == ["200 -"] + ["410 -"] * 19, pages
    assert _one_redemption(code).api_key_id == row.id
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).tokens_quota == 3_001_000
    assert db.session.execute(db.select(db.func.count(ApiKey.id))).scalar_one() == 1
