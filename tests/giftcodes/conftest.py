from tests.admin.conftest import admin, admin_user  # noqa: F401 - a logged-in admin for the dashboard pages
from tests.shop import (  # noqa: F401 - the shop's fixtures: SMTP sink, plans, workers, processes
    app_extra,
    in_processes,
    mail,
    paypal,
    paypal_server,
    plan,
    shop,
    smtp_server,
    start_workers,
    store_worker,
    worker_env,
)
from tests.store.test_browser import browser  # noqa: F401 - a headless Chromium for the module
