from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Integer

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Naive UTC, the one convention for every DateTime column (SQLite keeps no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)
