"""Small operator settings kept in SQL, by name: the notice on the public status page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import utcnow

STATUS_NOTICE_EN = "status_notice_en"
STATUS_NOTICE_ZH = "status_notice_zh"


class Setting(db.Model):
    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


def read_settings(*names: str) -> dict[str, str]:
    """The named settings; "" for one never set."""
    rows = db.session.execute(db.select(Setting.name, Setting.value).where(Setting.name.in_(names))).tuples()
    found = dict(rows.all())
    return {name: found.get(name, "") for name in names}


def write_settings(values: Mapping[str, str]) -> None:
    for name, value in values.items():
        row = db.session.get(Setting, name)
        if row is None:
            db.session.add(Setting(name=name, value=value))
        else:
            row.value = value
    db.session.commit()
