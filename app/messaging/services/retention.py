"""Message retention (wire §10.5, §16 #21): expire, delete, and free spent idempotency keys.

Upstream ships these as library functions nobody schedules; here ``flask worker run`` runs
:func:`run_retention` every ``MESSAGE_RETENTION_INTERVAL_SECONDS``:

1. messages past ``expires_at`` that are not ``acked``/``expired`` (and not being pushed right
   now) become ``expired``;
2. ``expired`` and ``acked`` messages more than ``MESSAGE_EXPIRED_RETENTION_DAYS`` past their
   ``expires_at`` are deleted, with their idempotency keys;
3. idempotency keys older than the 24 h window are deleted, so the key can be used again.

Expiry and deletion work in batches so one run never holds a long transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select, update

from app.db import utcnow
from app.extensions import db
from app.messaging.models import Message, MessageIdempotencyKey
from app.messaging.services.messages import IDEMPOTENCY_WINDOW

BATCH = 1000


@dataclass(frozen=True)
class RetentionReport:
    expired: int
    deleted: int
    keys_freed: int

    @property
    def total(self) -> int:
        return self.expired + self.deleted + self.keys_freed


def expire_messages(now: datetime) -> int:
    """Mark unfinished messages past ``expires_at`` as ``expired`` (one batch)."""
    ids = db.session.execute(
        select(Message.id).where(Message.expires_at <= now,
                                 Message.delivery_state.not_in(("acked", "expired",
                                                                "delivering")))
        .limit(BATCH)).scalars().all()
    if not ids:
        db.session.rollback()
        return 0
    count = db.session.execute(
        update(Message).where(Message.id.in_(ids),
                              Message.delivery_state.not_in(("acked", "expired", "delivering")))
        .values(delivery_state="expired", next_attempt_at=None)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count


def delete_expired_messages(now: datetime) -> int:
    """Delete finished messages kept past the retention period (one batch)."""
    cutoff = now - timedelta(days=current_app.config["MESSAGE_EXPIRED_RETENTION_DAYS"])
    ids = db.session.execute(
        select(Message.id).where(Message.expires_at <= cutoff,
                                 Message.delivery_state.in_(("expired", "acked")))
        .limit(BATCH)).scalars().all()
    if not ids:
        db.session.rollback()
        return 0
    db.session.execute(delete(MessageIdempotencyKey)
                       .where(MessageIdempotencyKey.message_id.in_(ids))
                       .execution_options(synchronize_session=False))
    count = db.session.execute(delete(Message).where(Message.id.in_(ids))
                               .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count


def free_idempotency_keys(now: datetime) -> int:
    """Delete idempotency keys older than the 24 h window (an indexed range delete)."""
    count = db.session.execute(
        delete(MessageIdempotencyKey)
        .where(MessageIdempotencyKey.created_at <= now - IDEMPOTENCY_WINDOW)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count


def run_retention(now: datetime | None = None) -> RetentionReport:
    """One batch of each retention step (see the module docstring)."""
    now = now or utcnow()
    return RetentionReport(expired=expire_messages(now), deleted=delete_expired_messages(now),
                           keys_freed=free_idempotency_keys(now))
