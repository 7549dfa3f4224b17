"""An order's statuses, in one place, and the sets the state machine reasons with.

created -> approved (the buyer approved at PayPal) -> fulfilled (captured and credited, once);
pending (PayPal holds the payment), declined (a capture attempt failed; the buyer may try again),
cancelled, expired, failed: not paid, and still payable should a payment arrive after all.
review: PayPal captured a different amount; an operator decides. refunded / reversed: paid, then
taken back.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    CREATED = "created"
    APPROVED = "approved"
    PENDING = "pending"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"
    REVIEW = "review"
    FULFILLED = "fulfilled"
    REFUNDED = "refunded"
    REVERSED = "reversed"


# A payment for an order in any of these states is still ours to fulfil: a buyer may cancel,
# then pay in another tab; PayPal may complete a capture we marked declined or expired.
PAYABLE = (
    OrderStatus.CREATED,
    OrderStatus.APPROVED,
    OrderStatus.PENDING,
    OrderStatus.DECLINED,
    OrderStatus.CANCELLED,
    OrderStatus.EXPIRED,
    OrderStatus.FAILED,
)
PAID = (OrderStatus.FULFILLED, OrderStatus.REFUNDED, OrderStatus.REVERSED)
# Unpaid orders whose fate the pending-order look-up asks PayPal about.
LOOKED_UP = (
    OrderStatus.CREATED,
    OrderStatus.APPROVED,
    OrderStatus.PENDING,
    OrderStatus.DECLINED,
    OrderStatus.CANCELLED,
    OrderStatus.FAILED,
)
