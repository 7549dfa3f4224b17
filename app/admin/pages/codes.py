"""Gift codes: generate a batch for a plan (shown and downloadable once), list them, void unused ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from app.admin import listings
from app.admin.blueprint import bp
from app.admin.forms import GiftCodeForm
from app.extensions import db
from app.giftcodes import export, service
from app.models import Plan, utcnow
from app.models.gift_code import GiftCode

STATES = ("unused", "expired", "redeemed", "void")


def _actor() -> service.Actor:
    return service.Actor(current_user.email, admin_id=current_user.id, ip=request.remote_addr or "")


@bp.get("/codes")
def codes() -> str:
    state = request.args.get("state", "") if request.args.get("state") in STATES else ""
    batch = request.args.get("batch", "").strip()[:16]
    page = listings.paginate(service.query(state=state, batch=batch), request.args.get("page", 1, type=int))
    plans = {p.id: p.name for p in db.session.execute(db.select(Plan)).scalars()}
    return render_template(
        "admin/codes.html", page=page, plans=plans, state=state, batch=batch, states=STATES, now=utcnow()
    )


@bp.route("/codes/new", methods=["GET", "POST"])
def codes_new() -> Any:
    form = GiftCodeForm()
    plans = db.session.execute(db.select(Plan).order_by(Plan.active.desc(), Plan.sort_order, Plan.id)).scalars()
    form.plan.choices = [(p.id, p.name if p.active else f"{p.name} ({_('off sale')})") for p in plans]
    if not form.validate_on_submit():
        return render_template("admin/codes_new.html", form=form), 400 if request.method == "POST" else 200
    expires = datetime.combine(form.expires.data, datetime.min.time()) if form.expires.data else None
    batch = service.generate(form.plan.data, form.count.data, actor=_actor(), expires_at=expires, note=form.note.data)
    html = render_template("admin/codes_created.html", batch=batch, rows=service.rows_for_export(batch.codes))
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # the plain codes are on this page only
    return response


@bp.post("/codes/export")
def codes_export() -> Response:
    """The CSV of codes just shown: the page posts them back, as nothing here can read them again."""
    pairs = service.rows_for_export(request.form.get("codes", "").split())
    batches = sorted({row.batch for _code, row in pairs})
    name = f"gift-codes-{'-'.join(batches[:1]) or 'none'}.csv"
    return Response(
        export.csv_text(pairs),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@bp.post("/codes/void")
def codes_void() -> Response:
    """Void one code, by the id the list's button posts."""
    row = db.get_or_404(GiftCode, request.form.get("code_id", type=int) or 0)
    try:
        service.void(str(row.id), actor=_actor())
    except service.GiftCodeError:
        flash(_("%(code)s… was not voided: it is %(state)s.", code=row.prefix, state=row.status), "error")
    else:
        flash(_("%(code)s… is void: it can no longer be redeemed.", code=row.prefix), "success")
    return redirect(url_for("admin.codes"))


@bp.post("/codes/void-batch")
def codes_void_batch() -> Response:
    batch = request.form.get("batch", "").strip()[:16]
    count = service.void_batch(batch, actor=_actor()) if batch else 0
    flash(_("%(count)s unused code(s) of batch %(batch)s voided.", count=count, batch=batch), "success")
    return redirect(url_for("admin.codes", batch=batch))
