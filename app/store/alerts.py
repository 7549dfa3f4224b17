"""The low-balance email on the key's statement page: turn it on (with an address) or off.

The key is the one the statement remembers in the session (pasted into a form once, never put in
a URL). The address is the one entered, else the one the key was bought with.
"""

from __future__ import annotations

from typing import Any

from flask import redirect, request, url_for
from flask_babel import lazy_gettext as _l

from app.billing import low_balance
from app.orders import checkout
from app.store import forms, statement
from app.store.views import LOW_BALANCE_BOX_ERROR, bp, locale, mask_email

_ERRORS = {
    "email": _l("Please enter a valid email address for the low-balance email."),
    "no_email": _l("This key was not bought with an email address: please enter one for the low-balance email."),
    "low_balance": LOW_BALANCE_BOX_ERROR,
}


@bp.app_template_filter("masked_email")
def masked_email(email: str) -> str:
    return mask_email(email)


@bp.post("/balance/alerts")
def low_balance_alert() -> Any:
    row = statement.remembered_key()
    if row is None:
        return redirect(url_for("store.check_balance"), code=303)
    entered = request.form.get("email", "")
    try:
        wanted = forms.is_ticked(request.form.getlist("low_balance_alert"), "low_balance")
        email = _address(entered, row.email) if wanted else None
    except (forms.BadField, checkout.CheckoutError) as exc:
        # The page again with what was typed, and the key's setting as it was.
        return statement.statement_page(row, status=400, alert_error=_ERRORS[exc.code], alert_email=entered[:254])
    if email is None:
        low_balance.unsubscribe(row.id)
    else:
        low_balance.subscribe(row.id, email, locale())
    return redirect(url_for("store.statement", saved=1, _anchor="low-balance"), code=303)


def _address(entered: str, purchase_email: str | None) -> str:
    if entered.strip():
        return checkout.normalise_email(entered)
    if not purchase_email:
        raise forms.BadField("no_email")
    return purchase_email
