"""The ``echoes`` table: one stored request per token, visible until ``expires_at``.

Kept in the database rather than in one process's memory so that every web process behind a
load balancer sees an echo stored through any other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime
from app.extensions import db


class Echo(db.Model):
    """The last request ``POST /v1/echo/{token}`` received for ``token``."""

    __tablename__ = "echoes"

    token: Mapped[str] = mapped_column(String(256), primary_key=True)
    payload: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
