"""Import boundaries from STYLE.md §3, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)

# package -> the app.* packages it may import (besides itself)
ALLOWED_APP_IMPORTS = {
    "app.relay": set(),
    "app.models": {"app.extensions"},
    # relay is a library of plain values and pure functions: billing reads its usage and outcomes
    "app.billing": {
        "app.models",
        "app.extensions",
        "app.secretbox",
        "app.relay",
        "app.mailer",
        "app.jobs",
        "app.metrics",
    },
    # routing's probe asks accounts through relay's HTTP helpers, and queues the admins' alerts
    "app.routing": {"app.models", "app.extensions", "app.secretbox", "app.metrics", "app.relay", "app.jobs"},
    "app.api": {
        "app.relay",
        "app.routing",
        "app.billing",
        "app.models",
        "app.jobs",
        "app.extensions",
        "app.site",
        "app.metrics",
    },
    "app.orders": {
        "app.billing",
        "app.models",
        "app.jobs",
        "app.extensions",
        "app.secretbox",
        "app.mailer",
        "app.i18n",
        "app.site",
    },
    "app.giftcodes": {"app.billing", "app.models", "app.extensions", "app.jobs", "app.secretbox", "app.orders"},
    "app.store": {
        "app.orders",
        "app.giftcodes",
        "app.billing",
        "app.models",
        "app.jobs",
        "app.extensions",
        "app.i18n",
        "app.security",
        "app.site",
    },
    "app.admin": {
        "app.orders",
        "app.giftcodes",
        "app.routing",
        "app.models",
        "app.billing",
        "app.extensions",
        "app.relay",
        "app.jobs",
        "app.i18n",
        "app.security",
    },
    "app.auth": {"app.models", "app.extensions", "app.i18n", "app.security"},
}
RELAY_THIRD_PARTY = {"urllib3", "requests", "orjson", "httptools"}


def modules(package_dir: Path):
    yield from sorted(package_dir.rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _allowed(name: str, own: str, allowed: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in {own, *allowed})


@pytest.mark.parametrize("package", sorted(ALLOWED_APP_IMPORTS))
def test_packages_import_only_what_they_may(package):
    package_dir = ROOT / package.replace(".", "/")
    allowed = ALLOWED_APP_IMPORTS[package]
    bad = []
    for path in modules(package_dir):
        for name in imported_names(path):
            top = name.split(".")[0]
            if top == "workers" or top == "app" and name != "app" and not _allowed(name, package, allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_relay_uses_only_stdlib_and_http_clients():
    bad = []
    for path in modules(ROOT / "app/relay"):
        for name in imported_names(path):
            top = name.split(".")[0]
            if top not in STDLIB and top not in RELAY_THIRD_PARTY and top not in ("app", "__future__"):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_app_never_imports_workers():
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(ROOT / "app")
        for name in imported_names(path)
        if name.split(".")[0] == "workers"
    ]
    assert bad == []


def test_only_the_paypal_module_imports_paypalrestsdk():
    users = {
        str(path.relative_to(ROOT))
        for path in modules(ROOT / "app")
        if any(n.split(".")[0] == "paypalrestsdk" for n in imported_names(path))
    }
    assert users <= {"app/orders/paypal.py"}


def test_gevent_is_patched_only_in_wsgi():
    patchers = [
        str(path.relative_to(ROOT))
        for directory in ("app", "workers", "tests")
        for path in modules(ROOT / directory)
        if "patch_all" in path.read_text() and path.name != "test_boundaries.py"
    ]
    # Each of these patches a process of its own: the fake run as a script, the sendall test's child.
    assert set(patchers) <= {"tests/fake_deepseek.py", "tests/test_gevent_send.py"}


def test_no_module_of_the_app_defers_an_import_of_another_to_dodge_a_circle():
    # create_app and the CLI import their blueprints and commands inside functions by design.
    allowed = {"app/__init__.py", "app/cli.py", "app/admin/views.py"}
    deferred = []
    for path in modules(ROOT / "app"):
        if str(path.relative_to(ROOT)) in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("app"):
                        deferred.append(f"{path.relative_to(ROOT)}:{inner.lineno} {inner.module}")
    assert deferred == []


# Writes of a table: an UPDATE or INSERT on its model, a new row of it, or an assignment to one of
# its owned columns. Each table has one owning package.
OWNERS = {
    "app.billing": (
        r"update\(ApiKey\b",
        r"insert\(ApiKey\b",
        r"\bApiKey\(",
        r"\.tokens_(quota|used) =",
        r"update\(UsageRecord\b",
        r"insert\(UsageRecord\b",
        r"\bUsageRecord\(",
    ),
    "app.giftcodes": (r"update\(GiftCode\b", r"insert\(GiftCode\b", r"\bGiftCode\("),
    "app.orders": (
        r"update\(Order\b",
        r"insert\(Order\b",
        r"\bOrder\(",
        r"update\(WebhookEvent\b",
        r"\bWebhookEvent\(",
        r"\bRefund\(",
        r"\border\.status =",
        r"update\(Refund\b",
    ),
}


@pytest.mark.parametrize("owner", sorted(OWNERS))
def test_only_the_owning_package_writes_its_tables(owner):
    import re

    pattern = re.compile("|".join(OWNERS[owner]))
    writers = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in modules(ROOT / "app")
        if not str(path.relative_to(ROOT)).startswith((owner.replace(".", "/") + "/", "app/models/"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert writers == []
