"""Importing this module registers every task."""

from workers import usage  # noqa: F401
