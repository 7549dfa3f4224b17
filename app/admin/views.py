"""The admin blueprint with every page registered on it (see app/admin/pages/)."""

from app.admin.blueprint import bp
from app.admin.pages import codes, keys, orders, overview, plans, upstreams, usage  # noqa: F401  (they register routes)

__all__ = ["bp"]
