from tests.shop import (  # noqa: F401 - the shop's fixtures: fake PayPal, SMTP sink, plans
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
