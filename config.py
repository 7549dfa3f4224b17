"""Configuration classes. This module is the only reader of os.environ.

The environment variables named in the issues (DATABASE_URL, REDIS_URL, SECRET_KEY,
UPSTREAM_BASE_URL, UPSTREAM_API_KEY, PAYPAL_*, SMTP_*, MAIL_FROM, PUBLIC_BASE_URL) are a public
contract; keep their names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'relaygate.sqlite3'}"


DEV_SECRET_KEY = "dev-insecure-change-me"  # public: refused in production


class Config:
    APP_NAME = "RelayGate"
    SECRET_KEY = _env("SECRET_KEY", DEV_SECRET_KEY)
    SQLALCHEMY_DATABASE_URI = _env("DATABASE_URL", _default_database_url())
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True}
    # Seconds: a database that does not answer fails a request in this time instead of hanging it.
    DATABASE_CONNECT_TIMEOUT = _env_int("DATABASE_CONNECT_TIMEOUT", 5)
    DATABASE_STATEMENT_TIMEOUT = _env_float("DATABASE_STATEMENT_TIMEOUT", 30.0)  # PostgreSQL
    DATABASE_POOL_TIMEOUT = _env_float("DATABASE_POOL_TIMEOUT", 10.0)  # waiting for a free connection
    REDIS_URL = _env("REDIS_URL")  # None = embedded single-process mode
    # Seconds: a Redis that does not answer fails a request in this time instead of hanging it.
    REDIS_CONNECT_TIMEOUT = _env_float("REDIS_CONNECT_TIMEOUT", 2.0)
    REDIS_SOCKET_TIMEOUT = _env_float("REDIS_SOCKET_TIMEOUT", 3.0)
    MAX_CONTENT_LENGTH = _env_int("RELAY_MAX_BODY_BYTES", 10 * 1024 * 1024)
    REQUEST_BODY_TIMEOUT = _env_float("REQUEST_BODY_TIMEOUT", 60.0)  # a body still arriving after this: 408
    # Reverse proxies in front (nginx = 1): their X-Forwarded-For/-Proto/-Host are believed, no more.
    TRUSTED_PROXIES = _env_int("TRUSTED_PROXIES", 0)
    JSON_SORT_KEYS = False

    # Upstream seed (the first `flask db upgrade` writes it to the upstreams table).
    UPSTREAM_BASE_URL = _env("UPSTREAM_BASE_URL", "https://api.deepseek.com")
    UPSTREAM_API_KEY = _env("UPSTREAM_API_KEY")

    # Relay timeouts, in seconds.
    RELAY_CONNECT_TIMEOUT = _env_float("RELAY_CONNECT_TIMEOUT", 10.0)
    RELAY_HEADER_TIMEOUT = _env_float("RELAY_HEADER_TIMEOUT", 20.0)  # headers, and a stream's first line
    RELAY_FIRST_EVENT_TIMEOUT = _env_float("RELAY_FIRST_EVENT_TIMEOUT", 600.0)
    RELAY_IDLE_TIMEOUT = _env_float("RELAY_IDLE_TIMEOUT", 300.0)
    RELAY_NONSTREAM_TIMEOUT = _env_float("RELAY_NONSTREAM_TIMEOUT", 900.0)
    RELAY_KEEPALIVE_INTERVAL = _env_float("RELAY_KEEPALIVE_INTERVAL", 10.0)
    # Upstream connections a process keeps and may hold at once. Each request holds at most one, and
    # a gevent worker serves up to GUNICORN_WORKER_CONNECTIONS clients: a smaller pool made the
    # clients past it wait, unseen, for another's stream to end.
    RELAY_POOL_SIZE = _env_int("RELAY_POOL_SIZE", _env_int("GUNICORN_WORKER_CONNECTIONS", 1000))
    # The CA bundle that vouches for an https upstream; unset, the system's (SSL_CERT_FILE also works).
    UPSTREAM_CA_FILE = os.environ.get("UPSTREAM_CA_FILE") or None

    # The upstream pool (app/routing): failover before the first byte, circuit breakers, slots.
    POOL_MAX_ATTEMPTS = _env_int("POOL_MAX_ATTEMPTS", 3)  # targets one request may try
    POOL_FAILOVER_SECONDS = _env_float("POOL_FAILOVER_SECONDS", 60.0)  # no new attempt after this
    POOL_BREAKER_FAILURES = _env_int("POOL_BREAKER_FAILURES", 5)  # consecutive failures that open it
    POOL_BREAKER_SECONDS = _env_float("POOL_BREAKER_SECONDS", 30.0)  # open this long, doubled per failed trial
    POOL_QUEUE_SECONDS = _env_float("POOL_QUEUE_SECONDS", 2.0)  # wait for a slot when every account is full
    POOL_LEASE_SECONDS = _env_float("POOL_LEASE_SECONDS", 1800.0)  # a dead process's slot is free after this
    POOL_PROBE_SECONDS = _env_float("POOL_PROBE_SECONDS", 60.0)  # beat: GET /models and /user/balance per account
    POOL_PROBE_TIMEOUT = _env_float("POOL_PROBE_TIMEOUT", 5.0)  # each probe request; a frozen account waits no longer

    # Keys and limits.
    KEY_DEFAULT_RPM = _env_int("KEY_DEFAULT_RPM", 30)
    KEY_CACHE_SECONDS = _env_float("KEY_CACHE_SECONDS", 30.0)
    BILLING_REDIS_PREFIX = _env("BILLING_REDIS_PREFIX", "rg")

    # Quotas and the usage ledger (app/billing/quota.py, reconcile.py).
    # Completion tokens held for a request that sets no max_tokens; keep it >= the upstream's default
    # max_tokens, or such a request can spend past its reservation.
    QUOTA_COMPLETION_ALLOWANCE = _env_int("QUOTA_COMPLETION_ALLOWANCE", 32768)  # max_tokens when the client sends none
    # Completion tokens a stream holds at first, and adds each time its answer outgrows its hold.
    QUOTA_HOLD_STEP = _env_int("QUOTA_HOLD_STEP", 2048)
    # A prompt the byte bound cannot fit is counted with DeepSeek's tokenizer up to this size.
    TOKENIZE_MAX_BYTES = _env_int("TOKENIZE_MAX_BYTES", 256 * 1024)
    QUOTA_HOLD_SECONDS = _env_int("QUOTA_HOLD_SECONDS", 3600)  # a dead process's reservation is freed after this
    LIVE_STATE_TTL = _env_int("LIVE_STATE_TTL", 0)  # cached quota, seconds; 0 = 3 embedded, 1 day with Redis
    USAGE_DRAIN_BATCH = _env_int("USAGE_DRAIN_BATCH", 500)  # usage records per SQL transaction
    USAGE_DRAIN_KICK_SECONDS = _env_float("USAGE_DRAIN_KICK_SECONDS", 0.5)  # each web process wakes the worker
    USAGE_DRAIN_SECONDS = _env_float("USAGE_DRAIN_SECONDS", 5.0)  # beat: drain in case a wake was lost
    # Usage a process could write neither to Redis nor to SQL waits here, one file per process, until it can.
    USAGE_SPOOL_DIR = _env("USAGE_SPOOL_DIR", str(INSTANCE_DIR / "usage-spool"))
    USAGE_RECONCILE_SECONDS = _env_float("USAGE_RECONCILE_SECONDS", 60.0)  # beat: correct live balances from SQL
    LEGACY_TOKENS_PER_USD = _env_int("LEGACY_TOKENS_PER_USD", 1_000_000)  # /dashboard/billing/*: $1 shown per 1M tokens

    # Storefront and email.
    PUBLIC_BASE_URL = _env("PUBLIC_BASE_URL")  # unset: the address each request came in on (app/site.py)
    PAYPAL_CLIENT_ID = _env("PAYPAL_CLIENT_ID")
    PAYPAL_CLIENT_SECRET = _env("PAYPAL_CLIENT_SECRET")
    PAYPAL_MODE = _env("PAYPAL_MODE", "sandbox")
    PAYPAL_API_BASE = _env("PAYPAL_API_BASE")
    PAYPAL_WEBHOOK_ID = _env("PAYPAL_WEBHOOK_ID")
    PAYPAL_TIMEOUT = _env_float("PAYPAL_TIMEOUT", 20.0)
    SMTP_HOST = _env("SMTP_HOST")
    SMTP_PORT = _env_int("SMTP_PORT", 587)
    SMTP_USER = _env("SMTP_USER")
    SMTP_PASSWORD = _env("SMTP_PASSWORD")
    SMTP_STARTTLS = _env_bool("SMTP_STARTTLS", True)
    SMTP_TIMEOUT = _env_float("SMTP_TIMEOUT", 15.0)
    MAIL_FROM = _env("MAIL_FROM", "RelayGate <no-reply@localhost>")
    PAYPAL_RECONCILE_SECONDS = _env_float("PAYPAL_RECONCILE_SECONDS", 300.0)  # beat interval
    PAYPAL_RECONCILE_MIN_AGE = _env_int("PAYPAL_RECONCILE_MIN_AGE", 60)  # leave orders this fresh alone
    KEY_REVEAL_SECONDS = _env_int("KEY_REVEAL_SECONDS", 3600)  # keep the encrypted new key for the page
    KEY_KEEP_UNSENT_SECONDS = _env_int("KEY_KEEP_UNSENT_SECONDS", 3 * 86400)  # then wipe it even if unsent

    # Admin.
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
    HSTS_SECONDS = _env_int("HSTS_SECONDS", 0)  # Strict-Transport-Security max-age; production: 1 year
    REMEMBER_COOKIE_HTTPONLY = True
    ADMIN_LOGIN_ATTEMPTS_PER_15_MIN = _env_int("ADMIN_LOGIN_ATTEMPTS_PER_15_MIN", 10)
    ADMIN_UPSTREAM_TIMEOUT = _env_float("ADMIN_UPSTREAM_TIMEOUT", 8.0)  # seconds, for "test connection"

    LOG_FORMAT = _env("LOG_FORMAT", "text")  # text, or json: one JSON object a line
    # Who may scrape GET /metrics: a bearer token and/or addresses or networks; neither set = off.
    METRICS_TOKEN = _env("METRICS_TOKEN")
    METRICS_ALLOW = _env("METRICS_ALLOW")

    LANGUAGES = ("en", "zh")
    BABEL_DEFAULT_LOCALE = "en"

    CELERY_BROKER_URL = _env("CELERY_BROKER_URL")  # default: REDIS_URL
    CELERY_VISIBILITY_TIMEOUT = _env_int("CELERY_VISIBILITY_TIMEOUT", 3600)


def engine_options(config: Any) -> dict[str, Any]:
    """SQLAlchemy engine options with the DATABASE_*_TIMEOUT settings applied for the URL's driver."""
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    url = config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("postgresql"):
        # libpq counts connect_timeout in whole seconds and treats anything under 2 as 2.
        statement_ms = int(config["DATABASE_STATEMENT_TIMEOUT"] * 1000)
        connect_args = {
            "connect_timeout": max(2, int(config["DATABASE_CONNECT_TIMEOUT"])),
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
        }
        options["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    if not url.startswith("sqlite"):
        options.setdefault("pool_timeout", config["DATABASE_POOL_TIMEOUT"])
    return options


def celery_settings(config: Any) -> dict[str, Any]:
    """The CELERY dict, computed after overrides so that tests and CLI flags agree with the app."""
    broker = config.get("CELERY_BROKER_URL") or config.get("REDIS_URL")
    if broker is None:
        # Embedded mode: no broker; app.jobs runs each job's service function in-process.
        return {"broker_url": "memory://", "task_always_eager": True, "task_ignore_result": True}
    return {
        "broker_url": broker,
        "task_ignore_result": True,
        # A worker killed mid-task leaves the message unacknowledged, so it is delivered again;
        # every task is idempotent, so a second run changes nothing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": config.get("CELERY_VISIBILITY_TIMEOUT", 3600)},
    }


class DevelopmentConfig(Config):
    DEBUG = False


class TestingConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret-key"
    WTF_CSRF_ENABLED = True
    SQLALCHEMY_DATABASE_URI = _env("TEST_DATABASE_URL", "sqlite://")
    REDIS_URL = _env("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    UPSTREAM_BASE_URL = "http://127.0.0.1:9"
    UPSTREAM_API_KEY = "sk-upstream-test-secret"
    PUBLIC_BASE_URL = "http://testserver"


_WEAK_SECRETS = {DEV_SECRET_KEY, "test-secret-key", "changeme", "change-me", "secret", "password", "relaygate"}
_MAKE_SECRET = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def weak_secret_reason(value: str | None) -> str | None:
    """Why a SECRET_KEY must not sign production sessions and encrypt upstream keys, or None."""
    if not value:
        return "SECRET_KEY must be set"
    if value.strip().lower() in _WEAK_SECRETS or ("change" in value.lower() and "me" in value.lower()):
        return "SECRET_KEY is a published default"
    if len(value) < 32:
        return f"SECRET_KEY has {len(value)} characters; it needs at least 32"
    if len(set(value)) < 10:
        return "SECRET_KEY repeats too few characters to be secret"
    return None


class ProductionConfig(Config):
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    HSTS_SECONDS = _env_int("HSTS_SECONDS", 365 * 86400)

    @property
    def SECRET_KEY(self) -> str:  # noqa: N802
        value = _env("SECRET_KEY")
        reason = weak_secret_reason(value)
        if reason:
            raise RuntimeError(f"{reason} in production (APP_ENV=production); {_MAKE_SECRET}")
        return value or ""

    @property
    def PUBLIC_BASE_URL(self) -> str:  # noqa: N802
        value = _env("PUBLIC_BASE_URL") or ""
        if not value.startswith("https://"):
            raise RuntimeError(
                "PUBLIC_BASE_URL must be the site's https:// address in production (APP_ENV=production): "
                "PayPal sends buyers back to it and emails link to it"
            )
        return value


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_from_env() -> type[Config]:
    name = _env("APP_ENV", "development") or "development"
    try:
        return CONFIGS[name]
    except KeyError as exc:
        raise RuntimeError(f"APP_ENV must be one of {', '.join(CONFIGS)}, got {name!r}") from exc
