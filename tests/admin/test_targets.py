"""A model's pool in the admin (app/admin/pages/targets.py): the same edits as the CLI, shown with
their live state, and bad input refused with readable messages and nothing lost."""

from __future__ import annotations

import re
import time

from app.extensions import db
from app.models import AuditLog, ModelRoute, Upstream
from app.routing import catalog, health
from app.routing.routes import TargetInfo
from tests.conftest import free_port


def _flash_route() -> ModelRoute:
    db.session.expire_all()
    return db.session.execute(db.select(ModelRoute).filter_by(public_id="deepseek-v4-flash")).scalar_one()


def _pool_section(html: str, route: ModelRoute) -> str:
    (section,) = re.findall(rf'<section class="card pool" id="pool-{route.id}">.*?</section>', html, re.S)
    return section


def _targets() -> list[tuple[str, str, int, int]]:
    return [(t["upstream"], t["upstream_model"], t["priority"], t["weight"]) for t in _report()]


def _report() -> list[dict]:
    db.session.expire_all()
    return catalog.pool_report("deepseek-v4-flash")["targets"]


def test_add_edit_and_remove_a_target_and_see_it_live(app, admin, redis):
    catalog.set_upstream("backup", base_url=f"http://127.0.0.1:{free_port()}", api_key="sk-backup-1234")
    route = _flash_route()
    form = admin.get(f"/admin/routes/{route.id}/targets/new").text
    assert '<option value="backup">' in form and '<option value="deepseek">' not in form  # already a target

    added = admin.post(
        f"/admin/routes/{route.id}/targets/new",
        {"upstream": "backup", "upstream_model": "deepseek-chat", "priority": "5", "weight": "3"},
    )
    assert added.status_code == 302
    assert _targets() == [("backup", "deepseek-chat", 5, 3), ("deepseek", "deepseek-v4-flash", 0, 1)]

    edited = admin.post(
        f"/admin/routes/{route.id}/targets/backup/edit", {"upstream_model": "", "priority": "-1", "weight": "2"}
    )
    assert edited.status_code == 302
    assert _targets() == [("deepseek", "deepseek-v4-flash", 0, 1), ("backup", "deepseek-chat", -1, 2)]

    backup_id = db.session.execute(db.select(Upstream.id).filter_by(name="backup")).scalar_one()
    health.disable(redis, "rg", backup_id, "Insufficient Balance")
    catalog.mark_disabled(backup_id, "Insufficient Balance")
    page = admin.get("/admin/upstreams").text
    backup_card = page.split("<h2>backup", 1)[1].split("</section>", 1)[0]
    assert re.search(r"Routes</span><span>1</span>", backup_card)  # it serves one model, as a second target
    pool = _pool_section(page, route)
    backup_row = pool.split("<td>backup</td>", 1)[1].split("</tr>", 1)[0]
    assert "taken out" in backup_row and "Insufficient Balance" in backup_row
    assert "healthy" in pool.split("<td>deepseek</td>", 1)[1].split("</tr>", 1)[0]
    assert "sk-backup-1234" not in pool

    removed = admin.post(f"/admin/routes/{route.id}/targets/backup/remove")
    assert removed.status_code == 302
    assert _targets() == [("deepseek", "deepseek-v4-flash", 0, 1)]
    actions = db.session.execute(db.select(AuditLog.action).order_by(AuditLog.id)).scalars().all()
    assert [a for a in actions if a.startswith("target.")] == ["target.add", "target.edit", "target.remove"]


def test_the_only_target_cannot_be_removed(admin):
    route = _flash_route()
    response = admin.post(f"/admin/routes/{route.id}/targets/deepseek/remove", follow_redirects=True)
    assert "deepseek is the only target of deepseek-v4-flash." in response.text
    assert _targets() == [("deepseek", "deepseek-v4-flash", 0, 1)]
    assert admin.post(f"/admin/routes/{route.id}/targets/nowhere/remove").status_code == 404


def test_in_flight_requests_show_against_the_accounts_limit(app, admin, redis):
    catalog.set_upstream("deepseek", max_concurrency=4)
    upstream_id = db.session.execute(db.select(Upstream.id).filter_by(name="deepseek")).scalar_one()
    account = TargetInfo(upstream_id, "deepseek", "http://x", None, "m", {}, 0, 1, 4)
    assert health.acquire(redis, "rg", account, "request-1", time.time(), 60)  # one request in flight
    route = _flash_route()
    page = admin.get("/admin/upstreams").text
    assert "1 / 4" in _pool_section(page, route)
    assert "1 of at most 4" in page


def test_bad_target_input_is_refused_readably_and_keeps_what_was_typed(admin):
    catalog.set_upstream("backup", base_url=f"http://127.0.0.1:{free_port()}")
    route = _flash_route()
    response = admin.post(
        f"/admin/routes/{route.id}/targets/new",
        {"upstream": "backup", "upstream_model": "kept-model", "priority": "high", "weight": "-2"},
    )
    assert response.status_code == 400
    assert "Not a valid integer value." in response.text
    assert "Enter a whole number from 1 to 1,000." in response.text
    assert 'value="kept-model"' in response.text and 'value="high"' in response.text and 'value="-2"' in response.text
    assert '<option selected value="backup">' in response.text
    unknown = admin.post(
        f"/admin/routes/{route.id}/targets/new", {"upstream": "nowhere", "priority": "0", "weight": "1"}
    )
    assert unknown.status_code == 400 and "Not a valid choice." in unknown.text
    zero = admin.post(f"/admin/routes/{route.id}/targets/deepseek/edit", {"priority": "1001", "weight": "0"})
    assert zero.status_code == 400
    assert "Enter a whole number from -1,000 to 1,000." in zero.text and "from 1 to 1,000" in zero.text
    assert _targets() == [("deepseek", "deepseek-v4-flash", 0, 1)]  # nothing saved
