"""Credential records beyond the user row: rotated API keys and registration invites."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db


class RotatedApiKey(db.Model):
    """A replaced API key's hash: it answers ``401 key_rotated`` until ``rotated_at`` + 24 h."""

    __tablename__ = "rotated_api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"),
                                               index=True)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Invite(db.Model):
    """A registration invite (for instances with ``ALLOW_REGISTER=false``); token stored hashed."""

    __tablename__ = "invites"
    __table_args__ = (
        CheckConstraint("max_uses IS NULL OR max_uses >= 1", name="max_uses_positive"),
        CheckConstraint("max_uses IS NULL OR uses <= max_uses", name="uses_within_max"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(12))
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None = unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InviteRedemption(db.Model):
    """Who redeemed an invite, and when."""

    __tablename__ = "invite_redemptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    invite_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("invites.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
