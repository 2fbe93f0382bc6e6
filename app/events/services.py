"""Subscriptions, the pull stream and acknowledgements (wire §11.1).

Every function takes the caller's user id and the agent ``ref`` of the path and answers
``404 agent_not_found`` for an agent the caller does not own (messaging's resolution, as for
the inbox).  Subscription ids that are not UUIDs are ``404 subscription_not_found``.

Deliberate differences from upstream (documented in docs/messaging.md):

* a second active subscription for the same (agent, event type, delivery target) is
  ``409 subscription_exists`` (upstream: a 500), also when two creates race;
* ``PATCH …/ack`` of a subscription that does not exist (or is detached, or belongs to another
  agent) is ``404 subscription_not_found`` instead of a silent ``{"acked": true}``;
* an ``event_type`` filter outside the registry is ``400 unknown_event_type``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from app.auth.tokens import generate_webhook_secret
from app.db import dialect_name, utcnow, violated_columns
from app.errors import BadRequest, Conflict, NotFound
from app.events import waiting
from app.events.models import Event, Subscription, visible
from app.events.registry import EVENT_TYPES
from app.extensions import db
from app.messaging.addressing import resolve_owned_agent
from app.outbound.ssrf import validate_url

_ACTIVE_UNIQUE = {"subscriptions.subscriber_agent_id", "subscriptions.event_type",
                  "subscriptions.delivery_target"}


def _agent_id(user_id, ref: str, *, live: bool = False) -> str:
    return resolve_owned_agent(user_id, ref, include_deleted=not live).id


def _subscription_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("subscription_not_found", "Subscription not found") from None


def _check_event_type(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise BadRequest("unknown_event_type",
                         f"Unknown event_type {event_type[:80]!r}; use one of "
                         f"{', '.join(EVENT_TYPES)}")


def redact_url(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a webhook URL: paths and queries may carry secrets."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def create_subscription(user_id, ref: str, data: dict[str, Any]) -> Subscription:
    """Subscribe the caller's agent ``ref`` to an event type.

    Raises ``400 unknown_event_type``, ``400 invalid_delivery_target`` (a pull subscription
    with a ``webhook_url`` or a webhook one without), ``400 invalid_webhook_url`` (the SSRF
    rules of wire §7.6) and ``409 subscription_exists``.  A webhook subscription gets a
    ``whsec_`` secret, shown once in the create response.
    """
    agent_id = _agent_id(user_id, ref, live=True)
    event_type, target = data["event_type"], data["delivery_target"]
    url = data.get("webhook_url")
    _check_event_type(event_type)
    if target == "pull" and url is not None:
        raise BadRequest("invalid_delivery_target",
                         "A pull subscription takes no webhook_url; omit it or use "
                         "delivery_target webhook")
    if target == "webhook" and not url:
        raise BadRequest("invalid_delivery_target",
                         "delivery_target webhook needs a webhook_url")
    secret = None
    if target == "webhook":
        try:
            url = validate_url(url, field="webhook_url")
        except BadRequest as exc:
            raise BadRequest("invalid_webhook_url", exc.message) from None
        secret = generate_webhook_secret()
    subscription = Subscription(
        id=uuid.uuid4(), subscriber_agent_id=agent_id, event_type=event_type,
        delivery_target=target, webhook_url=url, webhook_secret=secret,
        inline_body=bool(data.get("inline_body", False)), consecutive_failures=0,
        created_at=utcnow())
    db.session.add(subscription)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if not _ACTIVE_UNIQUE <= violated_columns(exc):
            raise
        raise Conflict("subscription_exists",
                       f"Agent {agent_id} already has an active {target} subscription to "
                       f"{event_type}; delete it first or use that one") from None
    return subscription


def list_subscriptions(user_id, ref: str) -> list[Subscription]:
    """The agent's active subscriptions, oldest first."""
    agent_id = _agent_id(user_id, ref)
    return list(db.session.execute(
        select(Subscription)
        .where(Subscription.subscriber_agent_id == agent_id, Subscription.detached_at.is_(None))
        .order_by(Subscription.created_at, Subscription.id)).scalars())


def detach_subscription(user_id, ref: str, subscription_id: str) -> None:
    """Detach (soft-delete) a subscription; idempotent: detaching again, or an id that does not
    exist, is not an error (wire §11.1)."""
    agent_id = _agent_id(user_id, ref)
    sub_id = _subscription_uuid(subscription_id)
    db.session.execute(
        update(Subscription)
        .where(Subscription.id == sub_id, Subscription.subscriber_agent_id == agent_id,
               Subscription.detached_at.is_(None))
        .values(detached_at=utcnow()).execution_options(synchronize_session=False))
    db.session.commit()


def acknowledge(user_id, ref: str, subscription_id: str, event_id: int) -> None:
    """Move the subscription's ``last_acked_event_id`` forward to ``event_id`` (never back:
    a lower value leaves it as it is).  ``404 subscription_not_found`` if the agent has no
    such active subscription."""
    agent_id = _agent_id(user_id, ref)
    sub_id = _subscription_uuid(subscription_id)
    mine = (Subscription.id == sub_id, Subscription.subscriber_agent_id == agent_id,
            Subscription.detached_at.is_(None))
    db.session.execute(
        update(Subscription)
        .where(*mine, or_(Subscription.last_acked_event_id.is_(None),
                          Subscription.last_acked_event_id < event_id))
        .values(last_acked_event_id=event_id).execution_options(synchronize_session=False))
    found = db.session.execute(select(Subscription.id).where(*mine)).scalar_one_or_none()
    db.session.commit()
    if found is None:
        raise NotFound("subscription_not_found",
                       f"Agent {agent_id} has no active subscription {sub_id}")


@dataclass(frozen=True)
class EventPage:
    """One page of the pull stream."""

    events: list[Event]
    next_cursor: int | None
    has_more: bool

    def as_body(self) -> dict[str, Any]:
        return {"events": self.events, "next_cursor": self.next_cursor,
                "has_more": self.has_more}


def _read(agent_id: str, since: int, limit: int, event_type: str | None) -> list[Event]:
    query = (select(Event).where(Event.recipient_agent_id == agent_id, Event.id > since)
             .order_by(Event.id).limit(limit))
    if dialect_name() == "postgresql":
        query = query.where(visible())  # never pass an event still being committed
    if event_type is not None:
        query = query.where(Event.event_type == event_type)
    return list(db.session.execute(query).scalars())


def _release_connection() -> None:
    """End the session's transaction and give its connection back to the pool (``close``
    detaches the rows read so far without expiring them: they are still serialised)."""
    db.session.close()


def _wait_for_events(agent_id: str, waiter: threading.Event, since: int, limit: int,
                     event_type: str | None, deadline: float) -> list[Event]:
    """Sleep (holding no connection) until an event for the agent is announced or ``deadline``
    passes; re-read after each wake-up, and every re-check interval without notifications."""
    config = current_app.config
    recheck = float(config["EVENTS_LONG_POLL_RECHECK_SECONDS"])
    notified = config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    if notified:
        waiting.listener.ensure_started(config["SQLALCHEMY_DATABASE_URI"])
    # Notifications are trusted until one wakes the poll and the read finds nothing (an event
    # waiting behind an older transaction still in progress): then it re-checks.
    quiet = True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        trusted = notified and quiet and waiting.listener.connected.is_set()
        woken = waiter.wait(remaining if trusted else min(remaining, recheck))
        waiter.clear()
        events = _read(agent_id, since, limit, event_type)
        _release_connection()
        if events:
            return events
        quiet = quiet and not woken


def pull_events(user_id, ref: str, *, since: int, limit: int, event_type: str | None,
                wait: bool, can_wait: bool) -> EventPage:
    """Events for the agent with ``id > since``, oldest first (wire §11.1).

    ``wait`` (``wait=long``): when there are none, wait up to ``EVENTS_LONG_POLL_SECONDS`` for
    one without holding a database connection — if ``can_wait`` (the server runs requests in
    threads) and this process has a free waiter slot; otherwise answer at once
    (:mod:`app.events.waiting`).  Side effect: the agent's active pull subscriptions (of
    ``event_type``, if given) acknowledge up to ``next_cursor``.
    """
    agent_id = _agent_id(user_id, ref)
    if event_type is not None:
        _check_event_type(event_type)
    config = current_app.config
    waiter = None
    if wait and can_wait:
        # Registered before the first read, so an event committed in between still wakes it.
        waiter = waiting.waiters.register(
            agent_id, waiting.waiter_limit(config["EVENTS_LONG_POLL_MAX_WAITERS"]))
    try:
        deadline = time.monotonic() + float(config["EVENTS_LONG_POLL_SECONDS"])
        events = _read(agent_id, since, limit, event_type)
        if not events and waiter is not None:
            _release_connection()
            events = _wait_for_events(agent_id, waiter, since, limit, event_type, deadline)
    finally:
        if waiter is not None:
            waiting.waiters.unregister(agent_id, waiter)
    next_cursor = events[-1].id if events else None
    if next_cursor is not None:
        _advance_pull_acks(agent_id, next_cursor, event_type)
    return EventPage(events, next_cursor, len(events) == limit)


def _advance_pull_acks(agent_id: str, cursor: int, event_type: str | None) -> None:
    """Reading up to ``cursor`` acknowledges it for the agent's pull subscriptions."""
    query = (update(Subscription)
             .where(Subscription.subscriber_agent_id == agent_id,
                    Subscription.delivery_target == "pull",
                    Subscription.detached_at.is_(None),
                    or_(Subscription.last_acked_event_id.is_(None),
                        Subscription.last_acked_event_id < cursor))
             .values(last_acked_event_id=cursor).execution_options(synchronize_session=False))
    if event_type is not None:
        query = query.where(Subscription.event_type == event_type)
    db.session.execute(query)
    db.session.commit()
