"""A buyer's browser in another process submitting a gift code on /redeem (see tests/orders/racing.py)."""

from __future__ import annotations

from typing import Any

from tests.orders.racing import KEY


def submit_code(browser: tuple[Any, str], code: str, key: str = "") -> str:
    """POST the redeem form; returns the status and whether the page shows a new key ("200 key")."""
    client, token = browser
    form = {"csrf_token": token, "code": code, "kind": "topup" if key else "new", "key": key}
    page = client.post("/redeem", data=form)
    return f"{page.status_code} {'key' if KEY.search(page.get_data(as_text=True)) else '-'}"
