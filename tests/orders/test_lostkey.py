"""Lost key: a link to the purchase address, then a new secret for the same account, emailed."""

from __future__ import annotations

import re

import requests

from app.extensions import db
from app.models import ApiKey
from app.orders import lostkey
from tests.orders.racing import KEY, at_once, one_replacement_email, wait_for_workers
from tests.shop import _CSRF, csrf_token
from tests.smtp_sink import text_of

LINK = re.compile(r"http://testserver(/lost-key/confirm/\S+)")


def _ask(client, email: str):
    return client.post("/lost-key", data={"csrf_token": csrf_token(client, "/lost-key"), "email": email})


def test_replacement_key_is_emailed_and_the_old_key_stops_working(client, make_key, store_worker, mail):
    row, old_key = make_key(tokens=2_000_000, email="Buyer@Example.com")
    row.tokens_used = 300_000
    db.session.commit()
    page = _ask(client, "buyer@example.com").get_data(as_text=True)
    assert "b***@example.com" in page

    link = LINK.search(text_of(mail.wait_for(1)[0])).group(1)
    confirm = client.get(link)
    assert confirm.status_code == 200 and row.prefix in confirm.get_data(as_text=True)
    assert db.session.get(ApiKey, row.id).key_hash == row.key_hash  # opening the link changes nothing
    done = client.post(link, data={"csrf_token": csrf_token(client, link)})
    assert "on its way" in done.get_data(as_text=True)

    message = mail.wait_for(2)[1]
    new_key = KEY.search(text_of(message)).group(0)
    assert message["To"] == "Buyer@Example.com" and new_key != old_key
    assert KEY.search(done.get_data(as_text=True)) is None  # emailed, not shown
    auth = {"Authorization": f"Bearer {old_key}"}
    assert client.get("/v1/models", headers=auth).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    db.session.expire_all()
    same = db.session.get(ApiKey, row.id)
    assert (same.tokens_quota, same.tokens_used) == (2_000_000, 300_000)  # balance kept
    assert client.get(link).status_code == 410  # the link worked once


def test_unknown_address_gets_the_same_answer_and_no_email(app, client, make_key, mail):
    from app.orders import delivery

    make_key(email="someone@example.com")
    page = _ask(client, "nobody@example.com")
    assert page.status_code == 200 and "n***@example.com" in page.get_data(as_text=True)
    assert delivery.send_lost_key_link("nobody@example.com", "en") is False
    assert mail.messages == []


def test_a_forged_or_foreign_link_is_refused(client, make_key):
    make_key(email="a@example.com")
    assert client.get("/lost-key/confirm/not-a-token").status_code == 410


def test_link_requests_are_limited_per_address(client, redis, make_key):
    make_key(email="a@example.com")
    queued = []
    for _ in range(3):
        _ask(client, "a@example.com")
        queued.append(redis.llen("celery"))  # the broker's queue: one email task, not three
    assert queued == [1, 1, 1]


def test_a_link_used_twenty_times_at_once_replaces_the_key_once_and_sends_one_email(
    redis, make_key, shop, start_workers, in_processes, mail
):
    row, old_key = make_key(tokens=2_000_000, email="buyer@example.com")
    token = lostkey.make_token(row)
    link = f"{shop.url}/lost-key/confirm/{token}"
    browser = requests.Session()
    csrf = _CSRF.search(browser.get(link, timeout=10).text).group(1)
    start_workers(2)

    def click():
        return browser.post(link, data={"csrf_token": csrf}, timeout=30).status_code

    # The same link used at the same moment by 16 clicks on the gunicorn workers and by four more
    # browsers, served by four more processes.
    path = f"/lost-key/confirm/{token}"
    pages: list[int] = []
    processes = in_processes(
        "tests.orders.racing:submit",
        [(path,)],
        prepare=("tests.orders.racing:browser", (path,)),
        meanwhile=lambda: pages.extend(at_once([click] * 16)),
    )
    browser.close()
    pages += [status for results in processes for status in results]
    wait_for_workers(redis)

    assert sorted(pages) == [200] + [410] * 19  # used once, dead for every other request
    one_replacement_email(mail, redis, row.id, old_key)
