"""The usage log (one row per relayed request) with filters and CSV export; the audit log."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from flask import Response, render_template, request, stream_with_context
from flask_babel import gettext as _

from app.admin import audit, listings
from app.admin.blueprint import bp
from app.admin.forms import OUTCOMES, UsageFilterForm
from app.billing import ledger
from app.extensions import db
from app.models import ApiKey, UsageRecord, utcnow

# The usage entry's own fields after who and when; the CSV header names them as before.
RECORD_COLUMNS = tuple(f for f in ledger.FIELDS if f not in ("request_id", "api_key_id"))
CSV_COLUMNS = ("created_at", "request_id", "key_id", "key_prefix", *RECORD_COLUMNS)


def _filters() -> tuple[UsageFilterForm, listings.UsageFilters, str]:
    """The form as submitted, the valid part of it as filters, and a message for a key that matched nothing."""
    form = UsageFilterForm(formdata=request.args)
    form.model.choices = [("", _("All models"))] + [(m, m) for m in listings.route_ids()]
    form.outcome.choices = [("", _("All outcomes"))] + [(o, o) for o in OUTCOMES]
    form.validate()
    key_problem, key_id = "", None
    if form.key.data and not form.key.errors:
        row = listings.resolve_key(form.key.data)
        if row is None:
            key_problem = _(
                "No single key matches “%(ref)s”. Give its id, full key or a unique part of its prefix.",
                ref=form.key.data,
            )
            key_id = -1  # show nothing rather than everything
        else:
            key_id = row.id
    ok = {name: not form[name].errors for name in ("status", "date_from", "date_to")}
    filters = listings.UsageFilters(
        key_id=key_id,
        model=form.model.data or "",
        outcome=form.outcome.data if form.outcome.data in OUTCOMES else "",
        status=form.status.data if ok["status"] else None,
        date_from=form.date_from.data if ok["date_from"] and ok["date_to"] else None,
        date_to=form.date_to.data if ok["date_to"] else None,
    )
    return form, filters, key_problem


@bp.get("/usage")
def usage() -> str:
    form, filters, key_problem = _filters()
    page = listings.paginate(listings.usage_query(filters), request.args.get("page", 1, type=int))
    args = {k: v for k, v in request.args.items() if k != "page"}
    return render_template(
        "admin/usage.html",
        form=form,
        page=page,
        totals=listings.usage_totals(filters),
        prefixes=listings.key_prefixes({record.api_key_id for record in page.items}),
        key_problem=key_problem,
        args=args,
    )


def _cell(value: Any) -> Any:
    # Spreadsheets run cells that start with = + - @ as formulas.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _csv_rows(filters: listings.UsageFilters) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    stmt = (
        listings.usage_query(filters)
        .add_columns(ApiKey.prefix)
        .join(ApiKey, ApiKey.id == UsageRecord.api_key_id)
        .execution_options(yield_per=1000)
    )
    for count, (record, prefix) in enumerate(db.session.execute(stmt), start=1):
        writer.writerow(
            [
                _cell(v)
                for v in (
                    record.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    record.request_id,
                    record.api_key_id,
                    prefix,
                )
            ]
            + [_cell(getattr(record, column)) for column in RECORD_COLUMNS]
        )
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@bp.get("/usage.csv")
def usage_csv() -> Response:
    _form, filters, _problem = _filters()
    audit.record("usage.export", "usage", **{k: v for k, v in asdict(filters).items() if v not in (None, "")})
    name = f"usage-{utcnow().strftime('%Y%m%d-%H%M%S')}.csv"
    return Response(
        stream_with_context(_csv_rows(filters)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.get("/audit")
def audit_log() -> str:
    action = request.args.get("action", "").strip()
    page = listings.paginate(listings.audit_query(action), request.args.get("page", 1, type=int))
    return render_template("admin/audit.html", page=page, action=action)
