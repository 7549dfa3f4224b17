from app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
# Beat: orders left unpaid in our books (tab closed, webhook lost) are looked up at PayPal.
celery_app.conf.beat_schedule = {
    **(celery_app.conf.beat_schedule or {}),
    "paypal-reconcile-orders": {
        "task": "paypal.reconcile_orders",
        "schedule": flask_app.config.get("PAYPAL_RECONCILE_SECONDS", 300.0),
    },
    # Usage records wait in Redis until a worker writes them to SQL; web processes wake it, and this
    # catches any wake that was lost. Reconcile corrects live balances from SQL.
    "usage-drain": {"task": "usage.drain", "schedule": flask_app.config["USAGE_DRAIN_SECONDS"]},
    "usage-reconcile": {"task": "usage.reconcile", "schedule": flask_app.config["USAGE_RECONCILE_SECONDS"]},
    # Upstream accounts the pool took out come back, and balances are read, only when someone asks.
    "pool-probe": {"task": "pool.probe", "schedule": flask_app.config["POOL_PROBE_SECONDS"]},
}

import workers.tasks  # noqa: E402,F401 - registers every task with celery_app
