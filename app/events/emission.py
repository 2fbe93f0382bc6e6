"""Emitting events: the public functions other domains call.

``message_delivered_write(...) -> (statement, parameters)``
    The INSERT of a message's ``message.delivered`` event, for the sender to run together with
    the message's own INSERT (:func:`app.db.insert_together`).  On PostgreSQL the send's write
    is then still one statement (the event is one more data-modifying CTE), so the event costs
    no round trip and exists exactly when the message does; elsewhere it is one more statement
    in the send's transaction.  Whether the recipient wants bodies inline is decided inside the
    statement (``EXISTS`` over its active ``inline_body`` subscriptions), so the send does not
    read subscriptions first.

``events_emitted(recipient_agent_ids)``
    Call after the commit: wakes the long polls of this process waiting for those agents (on
    PostgreSQL a trigger also notifies every other process).

``emit(event_type, recipient_agent_id, payload, ...)``
    Insert one event through the session (the digest job's path; the caller commits).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, SmallInteger, String, bindparam, case, cast, exists, insert, select

from app.db import UTCDateTime, dialect_name
from app.events.models import Event, Subscription
from app.events.registry import INLINE_BODY_MAX_BYTES, MESSAGE_DELIVERED
from app.extensions import db


def delivered_payload(*, message_id: str, sender_agent_id: str, recipient_agent_id: str,
                      thread_id: str, reply_to: str | None, priority: int,
                      correlation_id: str | None, subject: str | None) -> dict[str, Any]:
    """The ``message.delivered`` payload of wire §11.1 (without the inline body)."""
    return {"message_id": message_id, "sender_agent_id": sender_agent_id,
            "recipient_agent_id": recipient_agent_id, "thread_id": thread_id,
            "reply_to": reply_to, "priority": priority, "correlation_id": correlation_id,
            "subject": subject}


def with_inline_body(payload: dict[str, Any], body: str) -> dict[str, Any]:
    """``payload`` plus ``body`` when it is at most 32 KiB in UTF-8, else ``body_omitted:
    "size_too_large"`` and ``body_size_bytes``."""
    size = len(body.encode("utf-8"))
    if size <= INLINE_BODY_MAX_BYTES:
        return {**payload, "body": body}
    return {**payload, "body_omitted": "size_too_large", "body_size_bytes": size}


def _json_param(name: str, dialect: str):
    param = bindparam(name, type_=JSON())
    # PostgreSQL must be told the CASE yields json; SQLite stores the text as it comes.
    return cast(param, JSON()) if dialect == "postgresql" else param


@functools.cache
def _delivered_insert(dialect: str):
    """The event INSERT … SELECT, built once per dialect (see the module docstring)."""
    recipient = bindparam("ev_recipient", type_=String())
    wants_body = exists().where(Subscription.subscriber_agent_id == recipient,
                                Subscription.event_type == MESSAGE_DELIVERED,
                                Subscription.detached_at.is_(None),
                                Subscription.inline_body.is_(True))
    payload = case((wants_body, _json_param("ev_payload_inline", dialect)),
                   else_=_json_param("ev_payload", dialect))
    row = select(bindparam("ev_type", type_=String()), recipient, payload,
                 bindparam("ev_at", type_=UTCDateTime()),
                 bindparam("ev_priority", type_=SmallInteger()))
    return insert(Event.__table__).from_select(
        ["event_type", "recipient_agent_id", "payload", "emitted_at", "priority"], row)


def message_delivered_write(*, message_id: str, sender_agent_id: str, recipient_agent_id: str,
                            thread_id: str, reply_to: str | None, priority: int,
                            correlation_id: str | None, subject: str | None, body: str,
                            now: datetime) -> tuple[Any, dict[str, Any]]:
    """``(statement, parameters)`` writing the message's ``message.delivered`` event."""
    payload = delivered_payload(
        message_id=message_id, sender_agent_id=sender_agent_id,
        recipient_agent_id=recipient_agent_id, thread_id=thread_id, reply_to=reply_to,
        priority=priority, correlation_id=correlation_id, subject=subject)
    return (_delivered_insert(dialect_name()),
            {"ev_type": MESSAGE_DELIVERED, "ev_recipient": recipient_agent_id,
             "ev_payload": payload, "ev_payload_inline": with_inline_body(payload, body),
             "ev_at": now, "ev_priority": priority})


def events_emitted(recipient_agent_ids: Iterable[str]) -> None:
    """Wake this process's long polls waiting for these agents (call after the commit)."""
    from app.events.waiting import waiters

    waiters.wake(recipient_agent_ids)


def emit(event_type: str, recipient_agent_id: str, payload: dict[str, Any], *,
         emitted_at: datetime, idempotency_key: str | None = None,
         priority: int | None = None) -> Event:
    """Add one event to the session (the caller commits, then calls :func:`events_emitted`)."""
    event = Event(event_type=event_type, recipient_agent_id=recipient_agent_id,
                  payload=payload, emitted_at=emitted_at, idempotency_key=idempotency_key,
                  priority=priority)
    db.session.add(event)
    return event
