"""Digests (wire §11.1): every ``DIGEST_PERIOD_SECONDS`` the worker bundles each recipient's
priority 1–2 ``message.delivered`` events not yet bundled into one ``message.digest`` event.

``{"recipient_agent_id", "digest_period_start" (first bundled event), "digest_period_end"
(now), "bundle_count", "bundled_messages": [{message_id, sender_agent_id, subject, priority,
emitted_at}]}``.  A recipient with fewer than ``DIGEST_MIN_BATCH_SIZE`` waiting events waits
for a later period.  The digest and the marking of its events (``digested_at``) are one
transaction; the digest's idempotency key (recipient + last bundled event id) and the guarded
marking make two workers running the job at once write each digest once.  The bundled events
stay in the stream (a ``message.delivered`` subscriber still gets them).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from flask import current_app
from sqlalchemy import select, update

from app.db import dialect_name
from app.events.emission import emit, events_emitted
from app.events.models import Event
from app.events.registry import DIGEST_PRIORITIES, MESSAGE_DELIVERED, MESSAGE_DIGEST
from app.extensions import db

log = logging.getLogger(__name__)

#: Events read per run; a run that reads this many asks to run again at once.
BATCH = 5000


def digest_payload(recipient_agent_id: str, events: list[Event], now: datetime) -> dict:
    """The ``message.digest`` payload for these events (oldest first)."""
    return {
        "recipient_agent_id": recipient_agent_id,
        "digest_period_start": events[0].emitted_at.isoformat(),
        "digest_period_end": now.isoformat(),
        "bundle_count": len(events),
        "bundled_messages": [{"message_id": e.payload.get("message_id"),
                              "sender_agent_id": e.payload.get("sender_agent_id"),
                              "subject": e.payload.get("subject"),
                              "priority": e.priority, "emitted_at": e.emitted_at.isoformat()}
                             for e in events],
    }


def emit_digests(now: datetime) -> tuple[int, bool]:
    """Write one digest per recipient with enough waiting events; return (digests written,
    whether more events wait beyond this run's batch)."""
    minimum = current_app.config["DIGEST_MIN_BATCH_SIZE"]
    query = (select(Event)
             .where(Event.event_type == MESSAGE_DELIVERED, Event.digested_at.is_(None),
                    Event.priority.in_(DIGEST_PRIORITIES), Event.emitted_at <= now)
             .order_by(Event.id).limit(BATCH))
    if dialect_name() == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(db.session.execute(query).scalars())
    by_recipient: dict[str, list[Event]] = defaultdict(list)
    for event in rows:
        by_recipient[event.recipient_agent_id].append(event)
    written = []
    for recipient, events in by_recipient.items():
        if len(events) < minimum:
            continue
        ids = [e.id for e in events]
        marked = db.session.execute(
            update(Event).where(Event.id.in_(ids), Event.digested_at.is_(None))
            .values(digested_at=now).execution_options(synchronize_session=False)).rowcount
        if marked != len(ids):  # another worker bundled some of them meanwhile
            db.session.rollback()
            return len(written), True
        emit(MESSAGE_DIGEST, recipient, digest_payload(recipient, events, now), emitted_at=now,
             idempotency_key=f"{MESSAGE_DIGEST}:{recipient}:{ids[-1]}")
        written.append(recipient)
    db.session.commit()
    if written:
        events_emitted(written)
        log.info("events: %d digests written", len(written))
    return len(written), len(rows) == BATCH
