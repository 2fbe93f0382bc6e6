"""The ``users`` table."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, Uuid, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

DEFAULT_PLAN = "free"
DEFAULT_ACTIVE_CUE_LIMIT = 10
DEFAULT_MONTHLY_EXECUTION_LIMIT = 300
DEFAULT_MONTHLY_MESSAGE_LIMIT = 300
DEFAULT_RATE_LIMIT_PER_MINUTE = 60


class User(db.Model):
    """An account.  Secrets are stored hashed (API key) or as signing material (webhook)."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    plan: Mapped[str] = mapped_column(String(20), default=DEFAULT_PLAN)
    active_cue_limit: Mapped[int] = mapped_column(Integer, default=DEFAULT_ACTIVE_CUE_LIMIT)
    monthly_execution_limit: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_MONTHLY_EXECUTION_LIMIT)
    monthly_message_limit: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_MONTHLY_MESSAGE_LIMIT)
    rate_limit_per_minute: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_RATE_LIMIT_PER_MINUTE)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(12))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(70), nullable=True)
    external_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # False = deactivated: refused on every credential path, cues stop firing; nothing deleted.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Alert webhook (wire §4.3, §13.5): where alerts are pushed, and the secret signing them
    # (64 hex characters, minted on first read).
    alert_webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    alert_webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # never include secrets
        return f"<User {self.id} {self.slug}>"
