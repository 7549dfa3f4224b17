"""WSGI entry point. gevent must patch the standard library before anything else is imported."""

from gevent import monkey

monkey.patch_all()

from app import create_app, gevent_send  # noqa: E402

gevent_send.install()

app = create_app()
