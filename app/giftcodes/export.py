"""The CSV of a batch of codes just generated: the one file that holds them in plain text (pure)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from app.models.gift_code import GiftCode

COLUMNS = ("code", "prefix", "batch", "plan_id", "tokens", "expires_at", "note")


def _cell(value: Any) -> Any:
    # Spreadsheets run cells that start with = + - @ as formulas; a note is free text.
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


def csv_text(pairs: Iterable[tuple[str, GiftCode]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for code, row in pairs:
        expires = row.expires_at.strftime("%Y-%m-%d") if row.expires_at else ""
        writer.writerow([code, row.prefix, row.batch, row.plan_id, row.tokens, expires, _cell(row.note)])
    return buffer.getvalue()
