"""Database models, one module per aggregate."""

from app.models.admin import AdminUser, AuditLog
from app.models.api_key import ApiKey
from app.models.base import utcnow
from app.models.gift_code import GiftCode
from app.models.order import Order, Plan, WebhookEvent
from app.models.setting import Setting
from app.models.upstream import ModelRoute, RouteTarget, Upstream
from app.models.usage import UsageRecord

__all__ = [
    "AdminUser",
    "ApiKey",
    "AuditLog",
    "GiftCode",
    "ModelRoute",
    "Order",
    "Plan",
    "RouteTarget",
    "Setting",
    "Upstream",
    "UsageRecord",
    "WebhookEvent",
    "utcnow",
]
