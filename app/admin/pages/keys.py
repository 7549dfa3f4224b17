"""Client keys: search, create (shown once), edit, top up, revoke, and each key's usage."""

from __future__ import annotations

from typing import Any

from flask import flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from app.admin import audit, charts, listings, queries
from app.admin.blueprint import bp
from app.admin.formatting import thousands
from app.admin.forms import KeyCreateForm, KeyEditForm, TopupForm
from app.billing import key_lifecycle, statements
from app.extensions import db
from app.models import ApiKey, Order, UsageRecord, utcnow


@bp.get("/keys")
def keys() -> str:
    now = utcnow()
    q = request.args.get("q", "").strip()
    state = request.args.get("state", "")
    page = listings.paginate(listings.keys_query(q, state, now), request.args.get("page", 1, type=int))
    return render_template(
        "admin/keys.html",
        page=page,
        q=q,
        state=state,
        states=listings.KEY_STATES,
        now=now,
        key_state=listings.key_state,
        last_used=listings.last_used([row.id for row in page.items]),
    )


@bp.route("/keys/new", methods=["GET", "POST"])
def key_new() -> Any:
    form = KeyCreateForm()
    form.models.choices = listings.model_choices()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/key_new.html", form=form), status
    changes = form.changes()
    row, plaintext = key_lifecycle.create_key(
        tokens=form.tokens.data,
        name=changes["name"],
        email=changes["email"],
        rpm=changes["rpm"],
        max_concurrent=changes["max_concurrent"],
        models=changes["allowed_models"],
        expires_at=changes["expires_at"],
        reasoning_passthrough=changes["reasoning_passthrough"],
        commit=False,
    )
    row.note = changes["note"]
    db.session.commit()  # one commit: the key and its note, or nothing
    audit.record("key.create", f"key:{row.id}", tokens=form.tokens.data, **_loggable(changes))
    # Rendered, not redirected: the key exists only in this response (never stored, never cached).
    response = make_response(render_template("admin/key_created.html", row=row, plaintext=plaintext))
    response.headers["Cache-Control"] = "no-store"
    return response


def _loggable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if k not in ("note",) and v not in (None, "", False)}


def _detail(row: ApiKey, edit: KeyEditForm | None = None, topup: TopupForm | None = None, status: int = 200) -> Any:
    now = utcnow()
    if edit is None:
        edit = KeyEditForm(obj=row, formdata=None)
        edit.expires.data = row.expires_at.date() if row.expires_at else None
        edit.models.data = list(row.allowed_models or [])
    edit.models.choices = listings.model_choices(row.allowed_models)
    days = queries.requests_series(now, "day", 30, key_id=row.id)
    recent = db.session.execute(
        db.select(UsageRecord).filter_by(api_key_id=row.id).order_by(UsageRecord.created_at.desc()).limit(20)
    ).scalars()
    orders = db.session.execute(db.select(Order).filter_by(api_key_id=row.id).order_by(Order.id.desc())).scalars()
    chart = charts.bar_chart(
        [start.strftime("%m-%d") for start, *_rest in days],
        [charts.Series(_("Billed tokens"), [r[5] for r in days], "sky")],
        title=_("Billed tokens per day (UTC), last 30 days"),
        empty_text=_("No requests yet"),
    )
    # requests, completed, client closed, errors, billed tokens over the 30 days
    totals = tuple(sum(r[i] for r in days) for i in range(1, 6))
    html = render_template(
        "admin/key_detail.html",
        row=row,
        balance=statements.live_balance(row),
        state=listings.key_state(row, now),
        edit=edit,
        topup=topup or TopupForm(formdata=None),
        chart=chart,
        totals=totals,
        models=queries.model_breakdown(days[0][0], key_id=row.id),
        recent=list(recent),
        orders=list(orders),
    )
    return html, status


@bp.get("/keys/<int:key_id>")
def key_detail(key_id: int) -> Any:
    return _detail(db.get_or_404(ApiKey, key_id))


@bp.post("/keys/<int:key_id>/edit")
def key_edit(key_id: int) -> Any:
    row = db.get_or_404(ApiKey, key_id)
    form = KeyEditForm()
    form.models.choices = listings.model_choices(row.allowed_models)
    if not form.validate():
        return _detail(row, edit=form, status=400)
    changes = form.changes()
    before = {field: getattr(row, field) for field in changes}
    key_lifecycle.update_key(row, **changes)
    changed = {k: v for k, v in changes.items() if before[k] != v and k != "note"}
    audit.record("key.edit", f"key:{row.id}", **changed, note_changed=before["note"] != changes["note"])
    flash(_("Saved."), "success")
    return redirect(url_for("admin.key_detail", key_id=row.id))


@bp.post("/keys/<int:key_id>/topup")
def key_topup(key_id: int) -> Any:
    row = db.get_or_404(ApiKey, key_id)
    form = TopupForm()
    if not form.validate():
        return _detail(row, topup=form, status=400)
    key_lifecycle.topup_key(row, form.tokens.data)
    audit.record("key.topup", f"key:{row.id}", tokens=form.tokens.data, quota=row.tokens_quota)
    flash(_("Added %(tokens)s tokens.", tokens=thousands(form.tokens.data)), "success")
    return redirect(url_for("admin.key_detail", key_id=row.id))


@bp.post("/keys/<int:key_id>/revoke")
def key_revoke(key_id: int) -> Response:
    row = db.get_or_404(ApiKey, key_id)
    if row.status != "revoked":
        key_lifecycle.revoke_key(row)
        audit.record("key.revoke", f"key:{row.id}")
        flash(_("The key is revoked. Requests with it are refused from now on."), "success")
    return redirect(url_for("admin.key_detail", key_id=row.id))
