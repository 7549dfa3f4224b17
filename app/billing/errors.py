"""The billing exception family; app/api/errors.py maps them to OpenAI-shaped responses."""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    pass


class InvalidKey(BillingError):
    """Missing, unknown, revoked or expired key. `reason` is one of those four words."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Stale(BillingError):
    """What the request was decided on (the key's cached snapshot, the routes generation, the pool
    epoch) moved before its admission; nothing was admitted or counted. Decide again, fresh."""


class QuotaExceeded(BillingError):
    """Billed tokens: `used` settled, `held` by `running` requests still running, `needed` at
    most by the refused request (its prompt bound and one completion token)."""

    def __init__(
        self, used: int, total: int, needed: int = 0, held: int = 0, running: int = 0, *, window: Any = None
    ) -> None:
        super().__init__(f"used {used} and held {held} of {total}")
        self.window = window  # ratelimit.RateWindow: the refused request still counted
        self.used = used
        self.total = total
        self.needed = needed
        self.held = held
        self.running = running

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.used)

    @property
    def frees_up(self) -> bool:
        """The request fits once the running requests have settled (they may use less than they hold)."""
        return self.held > 0 and self.remaining >= self.needed


class RateLimited(BillingError):
    def __init__(self, limit: int, retry_after: int, kind: str = "requests", *, window: Any = None) -> None:
        super().__init__(f"{kind} limit {limit}")
        self.window = window  # ratelimit.RateWindow
        self.limit = limit
        self.retry_after = retry_after
        self.kind = kind
