"""WSGI entry point. gevent must patch the standard library before anything else is imported."""

from gevent import monkey

monkey.patch_all()

from app import create_app  # noqa: E402

app = create_app()
