"""The ``device_codes`` table: one row per pending or finished device-code login."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

PENDING = "pending"
EMAIL_SENT = "email_sent"
APPROVED = "approved"
CLAIMED = "claimed"
EXPIRED = "expired"
STATUSES = (PENDING, EMAIL_SENT, APPROVED, CLAIMED, EXPIRED)


class DeviceCode(db.Model):
    """A device-code login.

    ``pending → email_sent → approved → claimed``, or ``expired``.  Every token is stored only as
    its SHA-256 hash.  A new user's API key waits here Fernet-encrypted
    (``pending_api_key_encrypted``) from verification until the single poll that hands it to the
    CLI, which wipes it.
    """

    __tablename__ = "device_codes"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'email_sent', 'approved', 'claimed', 'expired')",
            name="status_valid"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    device_code: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    verification_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # SET NULL rather than CASCADE: exchanging a session token of a deleted user must say
    # ``user_not_found``, not pretend the token never existed.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)
    new_user: Mapped[bool] = mapped_column(Boolean, default=False)
    pending_api_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    session_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True,
                                                           unique=True)
    session_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)  # retention sweep
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:  # never include tokens
        return f"<DeviceCode {self.id} {self.status}>"
