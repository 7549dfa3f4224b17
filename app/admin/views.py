"""The admin blueprint with every page registered on it (see app/admin/pages/)."""

from app.admin.blueprint import bp
from app.admin.pages import (  # noqa: F401  (they register routes)
    codes,
    keys,
    notice,
    orders,
    overview,
    plans,
    targets,
    upstreams,
    usage,
)

__all__ = ["bp"]
