"""Tables of the event primitive: the append-only ``events`` log and agents' ``subscriptions``.

* ``events.id`` is the monotonic cursor of the pull stream (BIGINT, autoincrement).
* One active subscription per (agent, event type, delivery target): a partial unique index, so
  a detached row frees its slot and two concurrent creates cannot both win (the loser is a
  ``409 subscription_exists``).
* A webhook subscription has a URL and a pull one has none (a check constraint).
* ``events.idempotency_key`` is unique per event type when set: a digest of the same events is
  written once even if two workers build it.
* ``events.tx`` (PostgreSQL) is the id of the transaction that wrote the event.  Ids come from a
  sequence, so a transaction can commit event 11 while event 10's is still running; a reader
  that moved its cursor past 11 would never see 10.  Readers therefore only take events whose
  transaction is older than every transaction still running (:func:`visible`), which makes the
  stream append-only in id order.  SQLite runs one writer at a time, so ids are assigned in
  commit order there and the column stays empty.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

#: BIGINT on PostgreSQL; SQLite only autoincrements an ``INTEGER PRIMARY KEY``.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Event(db.Model):
    """One event for one recipient agent; ``payload`` is the wire payload of wire §11.1."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_recipient_agent_id_id", "recipient_agent_id", "id"),
        Index("ix_events_emitted_at", "emitted_at"),
        Index("uq_events_event_type_idempotency_key", "event_type", "idempotency_key",
              unique=True, sqlite_where=text("idempotency_key IS NOT NULL"),
              postgresql_where=text("idempotency_key IS NOT NULL")),
        # The digest job's look-up: low-priority deliveries not yet bundled.
        Index("ix_events_undigested", "priority", "id",
              sqlite_where=text("digested_at IS NULL"),
              postgresql_where=text("digested_at IS NULL")),
        # Ids are never reused on SQLite either (a cursor must never see an old id again).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(255))
    recipient_agent_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("agents.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    emitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The message's priority for ``message.delivered`` events (digest and debounce read it).
    priority: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    digested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The writing transaction's id (PostgreSQL fills it in itself; see the module docstring).
    # (FetchedValue: the ORM leaves the column out of its INSERTs, so the default applies.)
    tx: Mapped[int | None] = mapped_column(BigInteger, nullable=True,
                                           server_default=FetchedValue())

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.event_type}>"


def visible():
    """The condition a reader of the stream adds on PostgreSQL: the event's transaction is
    older than every transaction still in progress (so no lower id can still appear)."""
    return Event.tx < text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


class Subscription(db.Model):
    """An agent's wish to receive one event type, by pull or by signed webhook."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("delivery_target IN ('pull', 'webhook')", name="delivery_target"),
        CheckConstraint("(delivery_target = 'pull' AND webhook_url IS NULL) OR "
                        "(delivery_target = 'webhook' AND webhook_url IS NOT NULL)",
                        name="webhook_url"),
        Index("uq_subscriptions_active", "subscriber_agent_id", "event_type", "delivery_target",
              unique=True, sqlite_where=text("detached_at IS NULL"),
              postgresql_where=text("detached_at IS NULL")),
        Index("ix_subscriptions_dispatch", "delivery_target", "paused_until",
              sqlite_where=text("detached_at IS NULL"),
              postgresql_where=text("detached_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    subscriber_agent_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("agents.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(255))
    delivery_target: Mapped[str] = mapped_column(String(16))
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(70), nullable=True)
    inline_body: Mapped[bool] = mapped_column(Boolean, default=False)
    last_dispatched_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_acked_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: When a webhook request last carried priority-4 events (their debounce window).
    priority_4_dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(),
                                                                     nullable=True)
    #: Webhook dispatch lease: a worker sending this subscription's batch holds it until then
    #: (also held to the end of a debounce window, so nobody re-claims it meanwhile).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    detached_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:  # never include the secret
        return f"<Subscription {self.id} {self.event_type} {self.delivery_target}>"
