"""Orders: status, buyer, PayPal ids, amounts, refunds; manual completion and key resend."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from app.admin import audit, listings, services
from app.admin.blueprint import bp
from app.extensions import db
from app.models import Order, utcnow

log = logging.getLogger(__name__)


@bp.get("/orders")
def orders() -> str:
    status = request.args.get("status", "")
    q = request.args.get("q", "").strip()
    page = listings.paginate(listings.orders_query(status, q, utcnow()), request.args.get("page", 1, type=int))
    return render_template("admin/orders.html", page=page, status=status, q=q, statuses=listings.order_statuses())


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int) -> str:
    order = db.get_or_404(Order, order_id)
    return render_template(
        "admin/order_detail.html",
        order=order,
        events=listings.order_events(order),
        can_complete=services.can_complete(order),
        can_resend=services.can_resend(order),
    )


def _back(order: Order) -> Response:
    return redirect(url_for("admin.order_detail", order_id=order.id))


@bp.post("/orders/<int:order_id>/complete")
def order_complete(order_id: int) -> Response:
    order = db.get_or_404(Order, order_id)
    if not services.can_complete(order):
        flash(_("This order is already fulfilled or refunded."), "error")
        return _back(order)
    try:
        done = services.complete_order(order.id)
    except Exception as exc:  # the order domain's own refusal (not paid, amount mismatch...), shown as it is
        db.session.rollback()
        log.warning("manual completion of order %s failed: %s", order_id, type(exc).__name__)
        audit.record("order.complete_failed", f"order:{order_id}", reason=str(exc)[:200])
        flash(_("The order could not be completed: %(reason)s", reason=str(exc)[:200]), "error")
        return _back(order)
    audit.record("order.complete", f"order:{order_id}", status=done.status, key_id=done.api_key_id)
    flash(_("Order completed."), "success")
    return _back(order)


@bp.post("/orders/<int:order_id>/resend")
def order_resend(order_id: int) -> Response:
    order = db.get_or_404(Order, order_id)
    if not services.can_resend(order):
        flash(_("Only a fulfilled order for a new key can have its key replaced."), "error")
        return _back(order)
    try:
        services.resend_key(order.id)
    except Exception as exc:
        db.session.rollback()
        log.warning("key resend for order %s failed: %s", order_id, type(exc).__name__)
        audit.record("order.resend_failed", f"order:{order_id}", reason=str(exc)[:200])
        flash(_("The replacement key could not be sent: %(reason)s", reason=str(exc)[:200]), "error")
        return _back(order)
    audit.record("order.resend_key", f"order:{order_id}", key_id=order.api_key_id, email=order.email)
    flash(_("A replacement key is on its way to %(email)s; the old key no longer works.", email=order.email), "success")
    return _back(order)
