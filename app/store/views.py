"""The storefront: pricing, checkout with PayPal, setup guide, balance, top-up, lost key, gift codes,
webhook.

Every page works without JavaScript. Pages that may show a key send `Cache-Control: no-store`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from flask_babel import get_locale, refresh
from flask_babel import lazy_gettext as _l

from app import jobs
from app.billing import key_lifecycle
from app.billing.statements import remaining_tokens
from app.extensions import csrf, db
from app.giftcodes import service as giftcodes
from app.i18n import LANG_COOKIE
from app.models import ApiKey, Order
from app.models.multiplier import format_multiplier
from app.orders import checkout, fulfilment, lostkey, paypal, webhooks
from app.orders.plans import active_plans, display_name, get_active_plan, model_multipliers
from app.orders.status import OrderStatus
from app.security import content_security_policy, page_headers
from app.site import site_url
from app.store import balance, forms, status

log = logging.getLogger(__name__)

bp = Blueprint("store", __name__)


_OWNED = "orders"  # session: public ids of the orders this browser started
# The checkout's low-balance box and the statement page's (alerts.py) refuse a bad value in the same words.
LOW_BALANCE_BOX_ERROR = _l("The low-balance email box can only be ticked or left empty. Please try again.")
_CHECKOUT_ERRORS = {
    "plan": _l("That package is no longer on sale. Please pick another one."),
    "email": _l("Please enter a valid email address: your key and receipt are sent there."),
    "key": _l("We could not find that key. Paste the whole key; it starts with sk-gateway-."),
    "key_revoked": _l("That key has been revoked and cannot be topped up. Buy a new key instead."),
    "paypal": _l("PayPal could not be reached just now. Nothing was charged; please try again in a minute."),
    "paypal_config": _l("Payments are not set up on this site yet. Nothing was charged."),
    "low_balance": LOW_BALANCE_BOX_ERROR,
}


def locale() -> str:
    return str(get_locale() or "en")[:2]


@bp.before_request
def _choose_locale_for_this_request() -> None:
    # Flask-Babel caches the locale on the app context, which outlives one request when a caller
    # (a test, a CLI command) keeps its own app context pushed.
    refresh()


@bp.after_request
def _page_headers(response: Response) -> Response:
    chosen = request.args.get("lang")
    if chosen in current_app.config.get("LANGUAGES", ("en", "zh")):
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, samesite="Lax", httponly=True)
    return page_headers(response, csp=content_security_policy(paypal.approval_origins(current_app.config)))


@bp.context_processor
def _page_context() -> dict[str, Any]:
    return {"current_locale": locale(), "api_base_url": site_url() + "/v1"}


@bp.app_template_filter("money")
def money(cents: int, currency: str = "USD") -> str:
    amount = f"{cents // 100}" if cents % 100 == 0 else f"{cents / 100:.2f}"
    return f"${amount}" if currency == "USD" else f"{amount} {currency}"


@bp.app_template_filter("multiplier")
def multiplier(scaled: int) -> str:
    return format_multiplier(scaled)


@bp.app_template_filter("plan_name")
def plan_name(plan: Any) -> str:
    return display_name(plan, locale())


def _no_store(html: str, status: int = 200) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


# -- pages ---------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    return render_template("store/index.html", plans=active_plans(), multipliers=model_multipliers())


@bp.get("/guide")
def guide() -> str:
    return render_template("store/guide.html")


@bp.get("/status")
def status_page() -> str:
    return render_template(
        "store/status.html", models=status.load(), windows=status.WINDOWS, operator_notice=status.notice(locale())
    )


@bp.get("/buy/<int:plan_id>")
def buy(plan_id: int) -> str:
    plan = get_active_plan(plan_id)
    if plan is None:
        abort(404)
    return render_template("store/buy.html", plan=plan)


@bp.get("/topup")
def topup() -> str:
    return render_template("store/topup.html", plans=active_plans(), selected=request.args.get("plan", type=int))


@bp.post("/checkout")
def start_checkout() -> Any:
    plan_id = request.form.get("plan_id", type=int) or 0
    email = request.form.get("email", "")
    is_topup = request.form.get("kind") == "topup"
    try:
        alert = forms.is_ticked(request.form.getlist("low_balance_alert"), "low_balance")
        started = checkout.start(
            plan_id,
            email,
            key_text=request.form.get("key", "") if is_topup else None,
            locale=locale(),
            low_balance_alert=alert,
        )
    except (checkout.CheckoutError, forms.BadField) as exc:
        return _checkout_form_again(plan_id, email, is_topup, str(_CHECKOUT_ERRORS[exc.code]))
    owned = [*session.get(_OWNED, [])[-9:], started.order.public_id]
    session[_OWNED] = owned
    return redirect(started.approve_url, code=303)


def _checkout_form_again(plan_id: int, email: str, is_topup: bool, error: str) -> tuple[str, int]:
    # The box stays ticked when something else was wrong, so that nothing the buyer chose is lost.
    alert = request.form.get("low_balance_alert", "").strip().lower() in forms.TICKED
    if is_topup:
        page = render_template(
            "store/topup.html", plans=active_plans(), selected=plan_id, email=email, error=error, alert=alert
        )
        return page, 400
    plan = get_active_plan(plan_id)
    if plan is None:
        return render_template("store/index.html", plans=active_plans(), multipliers={}, error=error), 400
    return render_template("store/buy.html", plan=plan, email=email, error=error, alert=alert), 400


def _order_or_404(public_id: str) -> Order:
    order = db.session.execute(db.select(Order).filter_by(public_id=public_id)).scalar_one_or_none()
    if order is None:
        abort(404)
    return order


@bp.get("/checkout/return/<public_id>")
def checkout_return(public_id: str) -> Any:
    """PayPal sends the buyer here after approval (?token=<PayPal order id>&PayerID=...).

    We capture the order we recorded, never an id from the query string."""
    order = _order_or_404(public_id)
    try:
        checkout.capture(order)
    except paypal.PayPalUnavailable:
        log.warning("order %s: PayPal unreachable on return; the page retries", order.public_id)
        fulfilment.mark(order.id, OrderStatus.APPROVED, only_from=(OrderStatus.CREATED,))
    return redirect(url_for("store.order_status", public_id=public_id), code=303)


@bp.get("/checkout/cancel/<public_id>")
def checkout_cancel(public_id: str) -> Any:
    checkout.cancel(_order_or_404(public_id))
    return redirect(url_for("store.order_status", public_id=public_id), code=303)


@bp.get("/order/<public_id>")
def order_status(public_id: str) -> Response:
    order = _order_or_404(public_id)
    owned = public_id in session.get(_OWNED, [])
    key = fulfilment.reveal_key(order) if owned else None
    api_key = db.session.get(ApiKey, order.api_key_id) if order.api_key_id else None
    html = render_template(
        "store/order.html",
        order=order,
        owned=owned,
        key=key,
        api_key=api_key,
        remaining=remaining_tokens(api_key) if api_key else 0,
        masked_email=mask_email(order.email),
    )
    return _no_store(html)


def mask_email(email: str) -> str:
    name, _, domain = email.partition("@")
    return f"{name[:1]}***@{domain}" if domain else "***"


@bp.route("/balance", methods=["GET", "POST"])
def check_balance() -> Response:
    if request.method == "GET":
        return _no_store(render_template("store/balance.html"))
    row = key_lifecycle.find_pasted_key(request.form.get("key"))
    if row is None:
        error = _l("We could not find that key. Paste the whole key; it starts with sk-gateway-.")
        return _no_store(render_template("store/balance.html", error=error), 404)
    html = render_template(
        "store/balance.html", summary=balance.summarise(row), usage=balance.recent_usage(row.id), plans=active_plans()
    )
    return _no_store(html)


@bp.route("/lost-key", methods=["GET", "POST"])
def lost_key() -> Any:
    if request.method == "GET":
        return render_template("store/lost_key.html")
    try:
        email = checkout.normalise_email(request.form.get("email", ""))
    except checkout.CheckoutError:
        return render_template("store/lost_key.html", error=_CHECKOUT_ERRORS["email"]), 400
    lostkey.request_link(email, locale())
    return render_template("store/lost_key.html", sent_to=mask_email(email))


@bp.route("/lost-key/confirm/<token>", methods=["GET", "POST"])
def lost_key_confirm(token: str) -> Any:
    # GET is a page with a button, not an action: mail scanners that open links must not rotate keys.
    key = lostkey.resolve_token(token) if request.method == "GET" else lostkey.confirm(token, locale())
    if key is None:
        return _no_store(render_template("store/lost_key_confirm.html", invalid=True), 410)
    if request.method == "GET":
        return _no_store(render_template("store/lost_key_confirm.html", key=key, remaining=remaining_tokens(key)))
    return _no_store(render_template("store/lost_key_confirm.html", done=True, sent_to=mask_email(key.email or "")))


_REDEEM_ERRORS = {
    "unknown": _l("That is not a valid gift code. Check it and try again: codes look like RG-XXXX-XXXX-…"),
    "used": _l("That gift code has already been redeemed. Each code works once."),
    "void": _l("That gift code was cancelled by the seller and no longer works."),
    "expired": _l("That gift code expired on %(date)s UTC and no longer works."),
    "throttled": _l("Too many tries from your address. Please wait %(minutes)s minutes, then try again."),
    "key": _CHECKOUT_ERRORS["key"],
    "key_revoked": _l("That key has been revoked and cannot be topped up. Redeem the code for a new key instead."),
    "email": _l("Please enter a valid email address, or leave it empty."),
}
_REDEEM_STATUS = {"used": 410, "void": 410, "expired": 410, "throttled": 429}


def _redeem_error(exc: giftcodes.RedeemError) -> str:
    date = exc.expired_on.strftime("%Y-%m-%d") if exc.expired_on else ""
    return _REDEEM_ERRORS[exc.reason] % {"date": date, "minutes": -(-exc.retry_after // 60)}


@bp.route("/redeem", methods=["GET", "POST"])
def redeem() -> Response:
    """A gift code becomes a new key (shown once here, emailed when an address is given) or tokens
    on a pasted key. The key is only ever posted, never put in a URL."""
    if request.method == "GET":
        return _no_store(render_template("store/redeem.html", kind="new"))
    form = request.form
    kind = "topup" if form.get("kind") == "topup" else "new"
    email = form.get("email", "").strip() if kind == "new" else ""
    try:
        done = giftcodes.redeem(
            form.get("code", ""),
            client_ip=request.remote_addr or "",
            key_text=form.get("key", "") if kind == "topup" else None,
            email=email,
            locale=locale(),
            site=site_url(),
        )
    except giftcodes.RedeemError as exc:
        page = render_template(
            "store/redeem.html", kind=kind, code=form.get("code", "")[:64], email=email, error=_redeem_error(exc)
        )
        response = _no_store(page, _REDEEM_STATUS.get(exc.reason, 400))
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    masked = mask_email(email) if email else ""
    return _no_store(render_template("store/redeem_done.html", done=done, masked_email=masked))


# -- PayPal webhook ------------------------------------------------------------------------------


@bp.post("/paypal/webhook")
@csrf.exempt
def paypal_webhook() -> tuple[dict[str, Any], int]:
    """Verify, store under the event id, queue, answer at once. A forgery changes nothing (400)."""
    raw = request.get_data(cache=True)  # the signature covers these exact bytes
    try:
        event = webhooks.parse_event(raw)
    except webhooks.BadEvent as exc:
        return {"error": f"malformed event: {exc}"}, 400
    webhook_id = current_app.config.get("PAYPAL_WEBHOOK_ID")
    if not webhook_id:
        return {"error": "unverifiable"}, 400
    try:
        verified = paypal.verify_webhook(request.headers, raw, webhook_id)
    except paypal.PayPalNotConfigured:
        return {"error": "unverifiable"}, 400
    except paypal.PayPalUnavailable:
        return {"error": "verification unavailable, retry later"}, 503  # PayPal redelivers
    if not verified:
        log.warning("rejected a webhook that PayPal did not verify (%s)", event.get("event_type"))
        return {"error": "signature verification failed"}, 400
    row_id, queue = webhooks.store_event(event)
    if queue:
        jobs.enqueue_paypal_webhook(row_id)
    return {"ok": True}, 200
