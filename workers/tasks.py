"""Importing this module registers every task."""

from workers import email, paypal, usage  # noqa: F401
