"""Upstream accounts and public model routes: add, edit, test a connection, see the balance.

Upstream secrets go in through catalog.set_upstream (encrypted at rest) and never come back out:
pages show only the last four characters.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from app.admin import audit, queries, services
from app.admin.blueprint import bp
from app.admin.forms import RouteForm, UpstreamForm
from app.extensions import db
from app.models import ModelRoute, Upstream, utcnow
from app.models.multiplier import format_multiplier
from app.models.upstream import cents_text
from app.routing import catalog


@bp.get("/upstreams")
def upstreams() -> str:
    health = queries.upstream_health(utcnow())
    routes = db.session.execute(db.select(ModelRoute).order_by(ModelRoute.public_id)).scalars().all()
    return render_template(
        "admin/upstreams.html",
        health=health,
        checks={h.upstream.id: services.last_check(h.upstream.id) for h in health},
        routes=routes,
        live=catalog.live_states([h.upstream for h in health]),
        pools={r.id: catalog.pool_report(r.public_id)["targets"] for r in routes},
    )


def _upstream_form(upstream: Upstream | None) -> UpstreamForm:
    form = UpstreamForm(obj=upstream) if upstream is not None and request.method == "GET" else UpstreamForm()
    if upstream is not None:
        del form.name  # the name is the upstream's identity (routes refer to it); it is not edited here
        form.api_key.data = ""
        if request.method == "GET" and upstream.low_balance_cents is not None:
            form.low_balance.data = cents_text(upstream.low_balance_cents)
    return form


def _save_upstream(upstream: Upstream | None) -> Any:
    form = _upstream_form(upstream)
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/upstream_form.html", form=form, upstream=upstream), status
    name = upstream.name if upstream is not None else form.name.data
    if upstream is None and db.session.execute(db.select(Upstream.id).filter_by(name=name)).first():
        form.name.errors.append(_("An upstream with this name exists already."))
        return render_template("admin/upstream_form.html", form=form, upstream=None), 400
    saved = catalog.set_upstream(
        name,
        base_url=form.base_url.data,
        api_key=form.api_key.data or None,
        enabled=bool(form.enabled.data),
        max_concurrency=form.max_concurrency.data or 0,  # empty: no limit
    )
    catalog.set_low_balance(name, form.low_balance_cents)
    services.forget_check(saved.id)
    audit.record(
        "upstream.create" if upstream is None else "upstream.edit",
        f"upstream:{saved.id}",
        name=saved.name,
        base_url=saved.base_url,
        enabled=saved.enabled,
        key_changed=bool(form.api_key.data),
        max_concurrency=saved.max_concurrency,
        low_balance_cents=saved.low_balance_cents,
    )
    flash(_("Upstream %(name)s saved.", name=saved.name), "success")
    return redirect(url_for("admin.upstreams"))


@bp.route("/upstreams/new", methods=["GET", "POST"])
def upstream_new() -> Any:
    return _save_upstream(None)


@bp.route("/upstreams/<int:upstream_id>/edit", methods=["GET", "POST"])
def upstream_edit(upstream_id: int) -> Any:
    return _save_upstream(db.get_or_404(Upstream, upstream_id))


@bp.post("/upstreams/<int:upstream_id>/test")
def upstream_test(upstream_id: int) -> Response:
    upstream = db.get_or_404(Upstream, upstream_id)
    result = services.test_upstream(upstream)
    audit.record("upstream.test", f"upstream:{upstream.id}", ok=result.ok, latency_ms=result.latency_ms)
    if result.ok:
        flash(
            _(
                "%(name)s answered in %(ms)s ms with %(n)s models.",
                name=upstream.name,
                ms=result.latency_ms,
                n=len(result.models),
            ),
            "success",
        )
    else:
        flash(_("%(name)s failed the test: %(reason)s", name=upstream.name, reason=result.error), "error")
    return redirect(url_for("admin.upstreams"))


def _route_form(route: ModelRoute | None) -> RouteForm:
    if route is not None and request.method == "GET":
        form = RouteForm(obj=route)
        form.upstream.data = route.upstream.name
        form.prompt_multiplier.data = route.prompt_multiplier_e4
        form.cache_hit_multiplier.data = route.cache_hit_multiplier_e4
        form.completion_multiplier.data = route.completion_multiplier_e4
        form.extra_body.data = _pretty(route.extra_body)
    else:
        form = RouteForm()
    form.upstream.choices = [
        (u.name, u.name) for u in db.session.execute(db.select(Upstream).order_by(Upstream.id)).scalars()
    ]
    if route is not None:
        del form.public_id  # renaming would break every client configured with the old id
    return form


def _pretty(value: dict[str, Any] | None) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False) if value else ""


def _save_route(route: ModelRoute | None) -> Any:
    form = _route_form(route)
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/route_form.html", form=form, route=route), status
    public_id = route.public_id if route is not None else form.public_id.data
    if route is None and db.session.execute(db.select(ModelRoute.id).filter_by(public_id=public_id)).first():
        form.public_id.errors.append(_("This model id is routed already; edit that route instead."))
        return render_template("admin/route_form.html", form=form, route=None), 400
    saved = catalog.set_route(
        public_id,
        upstream_model=form.upstream_model.data.strip(),
        upstream_name=form.upstream.data,
        extra_body=form.extra_body_value,
        prompt_multiplier=form.prompt_multiplier.data,
        cache_hit_multiplier=form.cache_hit_multiplier.data,
        completion_multiplier=form.completion_multiplier.data,
        enabled=bool(form.enabled.data),
    )
    catalog.describe_route(public_id, form.description.data or "")
    audit.record(
        "route.create" if route is None else "route.edit",
        f"route:{saved.public_id}",
        upstream=form.upstream.data,
        upstream_model=saved.upstream_model,
        prompt_multiplier=format_multiplier(saved.prompt_multiplier_e4),
        cache_hit_multiplier=format_multiplier(saved.cache_hit_multiplier_e4),
        completion_multiplier=format_multiplier(saved.completion_multiplier_e4),
        extra_body=saved.extra_body,
        enabled=saved.enabled,
    )
    flash(_("Route %(model)s saved.", model=saved.public_id), "success")
    return redirect(url_for("admin.upstreams"))


@bp.route("/routes/new", methods=["GET", "POST"])
def route_new() -> Any:
    return _save_route(None)


@bp.route("/routes/<int:route_id>/edit", methods=["GET", "POST"])
def route_edit(route_id: int) -> Any:
    return _save_route(db.get_or_404(ModelRoute, route_id))
