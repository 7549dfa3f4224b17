"""Plans on sale: create, edit, retire (off sale but kept for its orders) and restore."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func
from werkzeug.wrappers import Response

from app.admin import audit, listings, services
from app.admin.blueprint import bp
from app.admin.formatting import cents_to_decimal
from app.admin.forms import PlanForm
from app.extensions import db
from app.models import Order, Plan


@bp.get("/plans")
def plans() -> str:
    rows = db.session.execute(db.select(Plan).order_by(Plan.active.desc(), Plan.sort_order, Plan.id)).scalars().all()
    sold = dict(
        db.session.execute(
            db.select(Order.plan_id, func.count(Order.id))
            .where(Order.fulfilled_at.is_not(None))
            .group_by(Order.plan_id)
        )
        .tuples()
        .all()
    )
    return render_template("admin/plans.html", plans=rows, sold=sold)


def _data(form: PlanForm) -> services.PlanData:
    return services.PlanData(
        name=form.name.data.strip(),
        name_zh=(form.name_zh.data or "").strip(),
        tokens=form.tokens.data,
        price_cents=form.price_cents,
        currency=form.currency.data,
        models=sorted(form.models.data) or None,
        rpm=form.rpm.data,
        valid_days=form.valid_days.data,
        sort_order=form.sort_order.data or 0,
        active=bool(form.active.data),
    )


def _form_for(plan: Plan | None) -> PlanForm:
    if plan is None or request.method == "POST":
        form = PlanForm()
    else:
        form = PlanForm(obj=plan)
        form.price.data = cents_to_decimal(plan.price_cents)
        form.models.data = list(plan.models or [])
    form.models.choices = listings.model_choices(plan.models if plan else None)
    return form


def _save(plan: Plan | None) -> Any:
    form = _form_for(plan)
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/plan_form.html", form=form, plan=plan), status
    saved = services.save_plan(plan, _data(form))
    audit.record(
        "plan.create" if plan is None else "plan.edit",
        f"plan:{saved.id}",
        name=saved.name,
        tokens=saved.tokens,
        price_cents=saved.price_cents,
        currency=saved.currency,
        active=saved.active,
    )
    flash(_("Plan saved."), "success")
    return redirect(url_for("admin.plans"))


@bp.route("/plans/new", methods=["GET", "POST"])
def plan_new() -> Any:
    return _save(None)


@bp.route("/plans/<int:plan_id>/edit", methods=["GET", "POST"])
def plan_edit(plan_id: int) -> Any:
    return _save(db.get_or_404(Plan, plan_id))


@bp.post("/plans/<int:plan_id>/retire")
def plan_retire(plan_id: int) -> Response:
    plan = services.set_plan_active(db.get_or_404(Plan, plan_id), False)
    audit.record("plan.retire", f"plan:{plan.id}", name=plan.name)
    flash(_("%(name)s is off sale. Keys already sold keep working.", name=plan.name), "success")
    return redirect(url_for("admin.plans"))


@bp.post("/plans/<int:plan_id>/restore")
def plan_restore(plan_id: int) -> Response:
    plan = services.set_plan_active(db.get_or_404(Plan, plan_id), True)
    audit.record("plan.restore", f"plan:{plan.id}", name=plan.name)
    flash(_("%(name)s is on sale again.", name=plan.name), "success")
    return redirect(url_for("admin.plans"))
