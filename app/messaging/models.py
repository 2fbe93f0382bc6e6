"""Tables of the messaging primitive: agents, messages, idempotency keys, monthly counters.

Invariants that concurrent requests could break are guarded by constraints, not by
check-then-insert: one live agent per (user, slug) (a partial unique index, so a soft-deleted
agent frees its slug), one idempotency key per (user, key), one counter row per (user, month).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

AGENT_STATUSES = ("online", "offline", "away")
DELIVERY_STATES = ("queued", "delivering", "retry_ready", "delivered", "read", "claimed",
                   "acked", "expired", "failed")


class Agent(db.Model):
    """An addressable identity owned by a user (``agt_`` + 12 characters)."""

    __tablename__ = "agents"
    __table_args__ = (
        # One live agent per (user, slug); soft-deleted rows keep their slug but free it.
        Index("uq_agents_user_id_slug_live", "user_id", "slug", unique=True,
              sqlite_where=text("deleted_at IS NULL"),
              postgresql_where=text("deleted_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(255))
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(70), nullable=True)
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="online")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # never include the secret
        return f"<Agent {self.id} {self.slug}>"


class Message(db.Model):
    """One message from an agent to an agent, with its delivery state and push bookkeeping."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_to_agent_id_delivery_state", "to_agent_id", "delivery_state"),
        Index("ix_messages_from_agent_id_created_at", "from_agent_id", "created_at"),
        Index("ix_messages_user_id_created_at", "user_id", "created_at"),
        Index("ix_messages_delivery_state_next_attempt_at", "delivery_state", "next_attempt_at"),
        Index("ix_messages_created_at_id", "created_at", "id"),  # the console's newest first
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"))  # the sender's user
    to_user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    from_agent_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("agents.id", ondelete="CASCADE"))
    to_agent_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("agents.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(16), index=True)
    reply_to: Mapped[str | None] = mapped_column(String(16), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=3)
    requested_priority: Mapped[int] = mapped_column(Integer, default=3)
    expects_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    reply_to_agent_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_state: Mapped[str] = mapped_column(String(16), default="queued")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dispatch_priority_bucket: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message_dispatch_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # Push delivery bookkeeping (never on the wire).
    push_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.delivery_state}>"


class MessageIdempotencyKey(db.Model):
    """A spent ``Idempotency-Key``: the primary key makes (user, key) unique under any race.

    Rows older than the idempotency window are treated as free and deleted by the retention
    job; the message keeps its ``idempotency_key`` for display.
    """

    __tablename__ = "message_idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("messages.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class MessageMonthlyCount(db.Model):
    """Messages sent by a user in one calendar month (UTC); ``month`` is its first day."""

    __tablename__ = "message_monthly_counts"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
