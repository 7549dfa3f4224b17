"""A model's pool in the admin: add a target (an upstream account), change its priority, weight and
upstream model, remove it. The same changes as `models add-target` / `remove-target`, through
routing.catalog, so the routes generation moves and every server picks them up at once."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from app.admin import audit
from app.admin.blueprint import bp
from app.admin.forms import TargetForm
from app.extensions import db
from app.models import ModelRoute, RouteTarget, Upstream
from app.routing import catalog


def _target(route: ModelRoute, upstream_name: str) -> RouteTarget:
    target = next((t for t in route.targets if t.upstream.name == upstream_name), None)
    if target is None:
        abort(404)
    return target


def _form(route: ModelRoute, target: RouteTarget | None) -> TargetForm:
    form = TargetForm(obj=target) if target is not None and request.method == "GET" else TargetForm()
    if target is not None:
        del form.upstream  # a target is its upstream: to move it, add the other one and remove this
        return form
    taken = {t.upstream_id for t in route.targets}
    upstreams = db.session.execute(db.select(Upstream).order_by(Upstream.id)).scalars()
    form.upstream.choices = [(u.name, u.name) for u in upstreams if u.id not in taken]
    if request.method == "GET":
        form.priority.data, form.weight.data = 0, 1
    return form


def _save(route: ModelRoute, target: RouteTarget | None) -> Any:
    form = _form(route, target)
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/target_form.html", form=form, route=route, target=target), status
    name = target.upstream.name if target is not None else form.upstream.data
    saved = catalog.set_target(
        route.public_id,
        name,
        upstream_model=form.upstream_model.data or None,  # empty: the model's own upstream model
        priority=form.priority.data,
        weight=form.weight.data,
    )
    audit.record(
        "target.add" if target is None else "target.edit",
        f"route:{route.public_id}",
        upstream=name,
        upstream_model=saved.upstream_model,
        priority=saved.priority,
        weight=saved.weight,
    )
    flash(_("Target %(upstream)s of %(model)s saved.", upstream=name, model=route.public_id), "success")
    return redirect(url_for("admin.upstreams", _anchor=f"pool-{route.id}"))


@bp.route("/routes/<int:route_id>/targets/new", methods=["GET", "POST"])
def target_new(route_id: int) -> Any:
    return _save(db.get_or_404(ModelRoute, route_id), None)


@bp.route("/routes/<int:route_id>/targets/<upstream>/edit", methods=["GET", "POST"])
def target_edit(route_id: int, upstream: str) -> Any:
    route = db.get_or_404(ModelRoute, route_id)
    return _save(route, _target(route, upstream))


@bp.post("/routes/<int:route_id>/targets/<upstream>/remove")
def target_remove(route_id: int, upstream: str) -> Response:
    route = db.get_or_404(ModelRoute, route_id)
    _target(route, upstream)
    try:
        catalog.remove_target(route.public_id, upstream)
    except ValueError:  # its only target
        flash(_("%(upstream)s is the only target of %(model)s.", upstream=upstream, model=route.public_id), "error")
    else:
        audit.record("target.remove", f"route:{route.public_id}", upstream=upstream)
        flash(_("%(upstream)s no longer serves %(model)s.", upstream=upstream, model=route.public_id), "success")
    return redirect(url_for("admin.upstreams", _anchor=f"pool-{route.id}"))
