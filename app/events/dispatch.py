"""Webhook subscriptions (wire §13.4): claim due subscriptions, send their next events signed,
record the outcome; the circuit breaker pauses a failing subscription.

A subscription is due when it is an active webhook one, not paused, not leased by another
worker, and has events after ``last_dispatched_event_id``.  Claiming sets a lease
(``claimed_until``) with one guarded ``UPDATE`` over candidates picked with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so two workers never send the same batch; no transaction is held across
the HTTP request.

One request carries at most 50 events, oldest first:
``{"delivery_id": "dlv_<subscription>_<first>_<last>", "subscription_id", "events": [{id,
event_type, payload, emitted_at}]}``, signed with the subscription's secret exactly like a
message push (§13.1: ``X-CueAPI-Signature`` over the canonical JSON, which is also the body
sent, so raw-body and re-serialising verifiers both work), plus ``X-CueAPI-Event-Count``.  The
destination is re-checked against the SSRF rules on every request (upstream does not).

* 2xx: ``last_dispatched_event_id`` and ``last_acked_event_id`` move to the last event sent
  (never back), failures reset.
* Anything else (including a blocked destination): the same events are retried next round;
  ``consecutive_failures`` grows and at 10 the subscription is paused for an hour.
* Priority 4: at most one request carrying priority-4 events per subscription every
  ``PRIORITY_4_DEBOUNCE_SECONDS``.  Inside the window only the events before the first
  priority-4 one are sent (later events wait behind it, so order is kept and nothing is sent
  twice), and the lease is held to the window's end.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, case, exists, func, or_, select, update

from app.db import dialect_name, utcnow
from app.events.models import Event, Subscription, visible
from app.events.registry import (
    BREAKER_PAUSE_SECONDS,
    BREAKER_THRESHOLD,
    DEBOUNCED_PRIORITY,
    WEBHOOK_BATCH,
)
from app.extensions import db
from app.outbound.http import SUCCESS, send
from app.outbound.signing import canonical_json, signature_headers

log = logging.getLogger(__name__)

#: Seconds a lease outlives the request timeout (a worker that died frees it after this).
LEASE_MARGIN_SECONDS = 60


def _lease_seconds() -> float:
    return float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]) + LEASE_MARGIN_SECONDS


def _committed():
    """Events a reader may take (PostgreSQL: none still being committed; see the model)."""
    return (visible(),) if dialect_name() == "postgresql" else ()


def _pending():
    return exists().where(
        Event.recipient_agent_id == Subscription.subscriber_agent_id,
        Event.event_type == Subscription.event_type,
        Event.id > func.coalesce(Subscription.last_dispatched_event_id, 0), *_committed())


def claim(limit: int, now: datetime | None = None) -> list[uuid.UUID]:
    """Lease up to ``limit`` due webhook subscriptions; return their ids."""
    if limit <= 0:
        return []
    now = now or utcnow()
    candidates = (
        select(Subscription.id)
        .where(Subscription.delivery_target == "webhook", Subscription.detached_at.is_(None),
               or_(Subscription.paused_until.is_(None), Subscription.paused_until <= now),
               or_(Subscription.claimed_until.is_(None), Subscription.claimed_until <= now),
               _pending())
        .order_by(Subscription.last_dispatched_at.is_not(None),
                  Subscription.last_dispatched_at, Subscription.id)
        .limit(limit))
    if dialect_name() == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=Subscription)
    ids = list(db.session.execute(candidates).scalars())
    if not ids:
        db.session.rollback()
        return []
    claimed = list(db.session.execute(
        update(Subscription)
        .where(Subscription.id.in_(ids),
               or_(Subscription.claimed_until.is_(None), Subscription.claimed_until <= now))
        .values(claimed_until=now + timedelta(seconds=_lease_seconds()))
        .returning(Subscription.id).execution_options(synchronize_session=False)).scalars())
    db.session.commit()
    return claimed


def _batch(subscription: Subscription, now: datetime) -> tuple[list[Event], datetime | None]:
    """The events to send now and, when priority-4 events must wait, when they may go."""
    events = list(db.session.execute(
        select(Event)
        .where(Event.recipient_agent_id == subscription.subscriber_agent_id,
               Event.event_type == subscription.event_type,
               Event.id > func.coalesce(subscription.last_dispatched_event_id, 0),
               *_committed())
        .order_by(Event.id).limit(WEBHOOK_BATCH)).scalars())
    window = float(current_app.config["PRIORITY_4_DEBOUNCE_SECONDS"])
    last = subscription.priority_4_dispatched_at
    if window <= 0 or last is None or now - last >= timedelta(seconds=window):
        return events, None
    for index, event in enumerate(events):
        if event.priority == DEBOUNCED_PRIORITY:
            return events[:index], last + timedelta(seconds=window)
    return events, None


def build_request(subscription: Subscription, events: list[Event],
                  now: datetime) -> tuple[str, dict[str, str]]:
    """The body and headers of one webhook request (see the module docstring)."""
    body = canonical_json({
        "delivery_id": f"dlv_{subscription.id}_{events[0].id}_{events[-1].id}",
        "subscription_id": str(subscription.id),
        "events": [{"id": e.id, "event_type": e.event_type, "payload": e.payload,
                    "emitted_at": e.emitted_at.isoformat()} for e in events],
    })
    headers = {"Content-Type": "application/json",
               **signature_headers(subscription.webhook_secret, body, now),
               "X-CueAPI-Event-Count": str(len(events))}
    return body, headers


def _forward(column, value: int):
    """``column`` moved forward to ``value`` (never back)."""
    return case((or_(column.is_(None), column < value), value), else_=column)


def deliver(subscription_id: uuid.UUID) -> str:
    """Send the next batch of a claimed subscription and record the outcome; return it
    (``delivered``, ``failed``, ``paused``, ``deferred`` or ``skipped``)."""
    subscription = db.session.get(Subscription, subscription_id)
    now = utcnow()
    if (subscription is None or subscription.detached_at is not None
            or subscription.delivery_target != "webhook"):
        _release(subscription_id)
        return "skipped"
    events, resume_at = _batch(subscription, now)
    if not events:
        # Only priority-4 events wait: keep the lease until their window ends.
        _release(subscription_id, until=resume_at)
        return "deferred" if resume_at else "skipped"
    body, headers = build_request(subscription, events, now)
    url = subscription.webhook_url
    carries_p4 = any(e.priority == DEBOUNCED_PRIORITY for e in events)
    db.session.rollback()  # no transaction held open across the HTTP call
    result = send("POST", url, body=body, headers=headers,
                  timeout=float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]))
    done = utcnow()
    mine = Subscription.id == subscription_id
    if result.outcome == SUCCESS:
        last = events[-1].id
        values = dict(last_dispatched_event_id=_forward(Subscription.last_dispatched_event_id,
                                                        last),
                      last_acked_event_id=_forward(Subscription.last_acked_event_id, last),
                      last_dispatched_at=done, consecutive_failures=0, claimed_until=resume_at)
        if carries_p4:
            values["priority_4_dispatched_at"] = done
        db.session.execute(update(Subscription).where(mine).values(**values)
                           .execution_options(synchronize_session=False))
        db.session.commit()
        return "delivered"
    failures = Subscription.consecutive_failures + 1
    tripped = and_(Subscription.consecutive_failures + 1 >= BREAKER_THRESHOLD)
    db.session.execute(
        update(Subscription).where(mine)
        .values(consecutive_failures=failures, claimed_until=None,
                paused_until=case((tripped, done + timedelta(seconds=BREAKER_PAUSE_SECONDS)),
                                  else_=Subscription.paused_until))
        .execution_options(synchronize_session=False))
    db.session.commit()
    paused = db.session.get(Subscription, subscription_id)
    if paused is not None and paused.consecutive_failures >= BREAKER_THRESHOLD:
        log.warning("event subscription %s paused for %ds after %d consecutive failures (%s)",
                    subscription_id, BREAKER_PAUSE_SECONDS, paused.consecutive_failures,
                    result.error)
        return "paused"
    return "failed"


def _release(subscription_id: uuid.UUID, until: datetime | None = None) -> None:
    db.session.execute(update(Subscription).where(Subscription.id == subscription_id)
                       .values(claimed_until=until)
                       .execution_options(synchronize_session=False))
    db.session.commit()


def release(subscription_ids: list[uuid.UUID]) -> int:
    """Give the leases of subscriptions still in flight back (worker shutdown)."""
    if not subscription_ids:
        return 0
    count = db.session.execute(
        update(Subscription).where(Subscription.id.in_(subscription_ids))
        .values(claimed_until=None).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count
