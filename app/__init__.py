"""RelayGate application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from config import BASE_DIR, INSTANCE_DIR, Config, celery_settings, config_from_env, engine_options


def create_app(config: type[Config] | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
        instance_path=str(INSTANCE_DIR),
    )
    load_config(app, config, overrides)
    init_logging(app)
    init_extensions(app)
    install_middleware(app)
    register_blueprints(app)
    register_errors(app)
    register_commands(app)
    return app


def load_config(app: Flask, config: type[Config] | None, overrides: Mapping[str, Any] | None) -> None:
    # An instance, not the class, so that property-based settings (production secrets) are
    # evaluated here and a missing secret fails inside create_app().
    app.config.from_object((config or config_from_env())())
    if overrides:
        app.config.update(overrides)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    if "CELERY" not in app.config:
        app.config["CELERY"] = celery_settings(app.config)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        INSTANCE_DIR.mkdir(exist_ok=True)


def init_logging(app: Flask) -> None:
    from app import logs

    logs.init_logging(app)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def init_extensions(app: Flask) -> None:
    from app import i18n
    from app.extensions import (
        CookieOnlySessionInterface,
        celery_init_app,
        csrf,
        db,
        init_redis,
        init_relay,
        login_manager,
        migrate,
    )
    from app.routing.health import init_pool_states
    from app.routing.routes import init_routes

    app.session_interface = CookieOnlySessionInterface()
    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    i18n.init_app(app)
    init_redis(app)
    init_relay(app)
    init_routes(app)
    init_pool_states(app)
    celery_init_app(app)


def install_middleware(app: Flask) -> None:
    from app.api.paths import NormalizeApiPaths
    from app.request_body import BodyGuard
    from app.security import init_hsts

    init_hsts(app)

    app.wsgi_app = BodyGuard(  # type: ignore[method-assign]
        app.wsgi_app, max_bytes=app.config["MAX_CONTENT_LENGTH"], timeout=app.config["REQUEST_BODY_TIMEOUT"]
    )
    app.wsgi_app = NormalizeApiPaths(app.wsgi_app)  # type: ignore[method-assign]
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )


def register_blueprints(app: Flask) -> None:
    from app.admin.views import bp as admin_bp
    from app.api.balance import bp as balance_bp
    from app.api.health import bp as health_bp
    from app.api.metrics import bp as metrics_bp
    from app.api.views import bp as api_bp
    from app.auth.views import bp as auth_bp
    from app.extensions import csrf
    from app.store import alerts, statement  # noqa: F401 - their pages register on the store blueprint
    from app.store.views import bp as store_bp

    csrf.exempt(api_bp)  # bearer-key API: no cookies, so no CSRF
    csrf.exempt(balance_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(balance_bp)
    app.register_blueprint(store_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp)


def register_errors(app: Flask) -> None:
    from app.api.errors import register_error_handlers

    register_error_handlers(app)


def register_commands(app: Flask) -> None:
    from app.cli import register_cli

    register_cli(app)
