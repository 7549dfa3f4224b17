"""Unbound extension instances and the init_* functions for the non-Flask singletons."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task
from flask import Flask, current_app, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

from app.relay.upstream import make_account_pool, make_pool

# Stable constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Blueprints that authenticate by bearer key and never use the session.
SESSIONLESS_BLUEPRINTS = frozenset({"api", "balance", "health", "metrics"})


class _LoginManager(LoginManager):
    def _update_remember_cookie(self, response: Any) -> Any:
        # Flask-Login reads the session after every request to refresh its remember cookie; on the
        # bearer-key API that opens a session no one uses and answers every call with Vary: Cookie.
        if request.blueprint in SESSIONLESS_BLUEPRINTS:
            return response
        return super()._update_remember_cookie(response)


class CookieOnlySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signing serializer for a request that
    brings no session cookie (every API call), where it cost about 2% of a /v1 request's CPU."""

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


db = SQLAlchemy(metadata=MetaData(naming_convention=_NAMING))
migrate = Migrate()
login_manager = _LoginManager()
csrf = CSRFProtect()


def init_redis(app: Flask) -> None:
    """Store the shared Redis client in app.extensions["redis"].

    With REDIS_URL unset the app runs embedded: an in-process fakeredis with Lua support keeps
    the same code paths (limits, balances) for a single process.
    """
    url = app.config.get("REDIS_URL")
    if url:
        # redis-py's default pool raises past max_connections; under gevent we want waiting.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=app.config.get("REDIS_MAX_CONNECTIONS", 200),
            timeout=10,
            socket_connect_timeout=app.config.get("REDIS_CONNECT_TIMEOUT", 2.0),
            socket_timeout=app.config.get("REDIS_SOCKET_TIMEOUT", 3.0),
        )
        client: Any = redis.Redis(connection_pool=pool)
    else:
        import fakeredis

        client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    app.extensions["redis"] = client


def get_redis(app: Flask | None = None) -> redis.Redis:
    return (app or current_app).extensions["redis"]


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def init_relay(app: Flask) -> None:
    """The upstream connection pools: keep-alive chat completions, and the admin's account calls."""
    app.extensions["relay_pool"] = make_pool(app.config["RELAY_POOL_SIZE"], app.config["UPSTREAM_CA_FILE"])
    app.extensions["account_pool"] = make_account_pool()
