"""Importing this module registers every task."""

from workers import email, paypal, pool, usage  # noqa: F401
