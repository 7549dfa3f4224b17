"""The operator's notice on the public status page (English and Chinese), kept in the settings table."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from app.admin import audit
from app.admin.blueprint import bp
from app.admin.forms import StatusNoticeForm
from app.models.setting import STATUS_NOTICE_EN, STATUS_NOTICE_ZH, read_settings, write_settings


@bp.route("/status-notice", methods=["GET", "POST"])
def status_notice() -> Any:
    form = StatusNoticeForm()
    if request.method == "GET":
        stored = read_settings(STATUS_NOTICE_EN, STATUS_NOTICE_ZH)
        form.notice_en.data, form.notice_zh.data = stored[STATUS_NOTICE_EN], stored[STATUS_NOTICE_ZH]
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/status_notice.html", form=form), status
    write_settings({STATUS_NOTICE_EN: form.notice_en.data, STATUS_NOTICE_ZH: form.notice_zh.data})
    audit.record("status.notice", "status", english=form.notice_en.data, chinese=form.notice_zh.data)
    shown = form.notice_en.data or form.notice_zh.data
    flash(_("The status page notice is saved.") if shown else _("The status page shows no notice now."), "success")
    return redirect(url_for("admin.status_notice"))
