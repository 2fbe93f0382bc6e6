"""Credential records beyond the user row: rotated API keys, invites, service principals, audit."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Uuid
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
    """A registration invite (for instances with ``ALLOW_REGISTER=false``); token stored hashed.

    ``owner`` is the owner tag of the service principal that minted it (None: minted by an
    unbound principal, the env token or the CLI).  Owner-bound principals see and revoke only
    their owner's invites, and a user who redeems one belongs to that owner.
    """

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
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
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


class ServicePrincipalRecord(db.Model):
    """A named service that may act for users (delegation), with an optional owner binding.

    ``scopes`` is a space-separated list (``users:write users:act keys:mint``).  A revoked
    principal keeps its row (and its audit trail) but no key of it is accepted any more.
    """

    __tablename__ = "service_principals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ServiceKey(db.Model):
    """One key (``svc_…``, stored as its SHA-256) of a principal; at most two are live at once."""

    __tablename__ = "service_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    principal_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("service_principals.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditRecord(db.Model):
    """One request a service principal made (delegated, or on ``/v1/internal``), or one action of
    an operator in the console (``principal`` = ``console:<email>``, ``key_id`` = its session).

    Deliberately without foreign keys: the trail outlives renamed or revoked principals and is
    written in batches off the request path.
    """

    __tablename__ = "audit_records"
    __table_args__ = (
        Index(None, "principal", "at"),
        Index(None, "user_id", "at"),
        Index(None, "request_id"),  # the console's look-up by X-Request-Id
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    principal: Mapped[str] = mapped_column(String(320))
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(36))
