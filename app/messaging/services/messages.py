"""Sending messages (wire §10.4) and the recipient's read / ack transitions (§10.5-10.6).

``send_message`` follows the upstream processing order, with one deliberate change: the
idempotency lookup runs before the per-minute and priority limits, so a client retrying a send
that already succeeded gets its message back instead of a 429 (allowed by spec §16 #14).  The
fingerprint therefore uses the *requested* priority.  The (user, key) uniqueness is a primary
key, so concurrent sends with one key create exactly one message: the losers of the race roll
back and replay the winner's message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.exc import IntegrityError

from app.db import (built_like_loaded, commit_keeping_state, insert_together, utcnow,
                    violated_columns)
from app.errors import BadRequest, Conflict, Forbidden, NotFound
from app.events import emission as events
from app.extensions import db
from app.messaging import authorization
from app.messaging.addressing import agent_not_found, new_id, prefetch_agents, resolve_agent
from app.messaging.services.agents import touch_presence
from app.messaging.models import Agent, Message, MessageIdempotencyKey
from app.quotas import messages as quotas
from app.users.models import User

MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_BYTES = 10240
IDEMPOTENCY_WINDOW = timedelta(hours=24)
_MESSAGE_ID = re.compile(r"msg_[a-z0-9]{12}")
#: How the 404 of an unknown (or refused foreign) ``to`` / ``reply_to_agent`` names it.
RECIPIENT = "Recipient agent"
REPLY_AGENT = "reply_to_agent"


def metadata_size(metadata: dict[str, Any]) -> int:
    """Bytes of ``metadata`` as compact, key-sorted UTF-8 JSON (the size limit's measure)."""
    return len(json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8"))


def fingerprint(to_agent_id: str, data: dict[str, Any]) -> str:
    """SHA-256 over the parts of a send that must match for an idempotent replay."""
    material = {"to": to_agent_id, "body": data["body"], "subject": data.get("subject"),
                "priority": data.get("priority", 3), "reply_to": data.get("reply_to"),
                "metadata": data.get("metadata") or {}}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SendResult:
    """The message, whether it is new (201) or a replay (200), and whether priority fell."""

    message: Message
    created: bool
    downgraded: bool = False


def _authorize(sender: Agent, target: Agent, kind: str, key: str | None, *, ref: str,
               what: str) -> None:
    """Ask the authorization backend; a refusal for another user's agent looks like no agent.

    Upstream answers ``403 cross_tenant_messaging_forbidden`` naming both agent ids, which tells
    the caller that an address exists and what its id is.  Here a refused agent of another user
    gets exactly the answer a missing one gets (``404 agent_not_found`` with the reference the
    caller gave), so agents of other users cannot be probed.  A refusal between two of the
    caller's own agents (a webhook backend may deny those) stays a 403 that names no id.
    """
    request = authorization.AuthorizationRequest(
        sender_user_id=sender.user_id, recipient_user_id=target.user_id,
        sender_agent_id=sender.id, recipient_agent_id=target.id, message_kind=kind,
        idempotency_key=key)
    if authorization.is_allowed(request):
        return
    if not request.same_user:
        raise agent_not_found(ref, what)
    raise Forbidden("cross_tenant_messaging_forbidden",
                    "The authorization backend refused this send"
                    + (" (reply_to_agent)" if kind == authorization.REPLY_CHAIN else ""))


#: The message attributes a send writes (the others keep their column defaults).
_SENT_ATTRIBUTES = (
    "id", "user_id", "to_user_id", "from_agent_id", "to_agent_id", "thread_id", "reply_to",
    "subject", "body", "priority", "requested_priority", "expects_reply", "reply_to_agent_id",
    "delivery_state", "meta", "idempotency_key", "correlation_id", "dispatch_priority_bucket",
    "created_at", "send_at", "expires_at", "push_attempts", "next_attempt_at")


@functools.cache
def _message_insert():
    """The message INSERT, built once: a statement costs more to build than to run."""
    columns = Message.__mapper__.columns
    return insert(Message.__table__).values(
        {columns[attr].key: bindparam(f"msg_{attr}") for attr in _SENT_ATTRIBUTES})


def _message_params(values: dict[str, Any]) -> dict[str, Any]:
    if len(values) != len(_SENT_ATTRIBUTES):  # (a missing one fails below)
        raise ValueError(f"a send writes exactly {_SENT_ATTRIBUTES}, got {sorted(values)}")
    return {f"msg_{attr}": values[attr] for attr in _SENT_ATTRIBUTES}


@functools.cache
def _key_insert():
    table = MessageIdempotencyKey.__table__
    return insert(table).values({name: bindparam(f"key_{name}") for name in
                                 ("user_id", "key", "message_id", "fingerprint", "created_at")})


def _replay(user_id, key: str, digest: str, now: datetime) -> SendResult | None:
    """The earlier send for ``key`` if it is still inside the window (409 if it differs)."""
    row = db.session.get(MessageIdempotencyKey, (user_id, key))
    if row is None:
        return None
    if row.created_at <= now - IDEMPOTENCY_WINDOW:
        # Spent key whose window passed before the cleanup job ran: it is free again.  A
        # guarded statement, so two requests freeing it at once do not trip over each other.
        db.session.execute(
            delete(MessageIdempotencyKey)
            .where(MessageIdempotencyKey.user_id == user_id, MessageIdempotencyKey.key == key,
                   MessageIdempotencyKey.created_at <= now - IDEMPOTENCY_WINDOW)
            .execution_options(synchronize_session=False))
        db.session.expunge(row)
        return None
    if row.fingerprint != digest:
        raise Conflict("idempotency_key_conflict",
                       "This Idempotency-Key was already used for a different message in the "
                       "last 24 hours; use a new key for a new message")
    message = db.session.get(Message, row.message_id)
    return SendResult(message, created=False)


def send_message(user: User, data: dict[str, Any], *, from_ref: str | None,
                 idempotency_key: str | None) -> SendResult:
    """Send a message as the caller's agent ``from_ref`` (see the module docstring).

    Raises, in this order: ``400 missing_from_agent``; ``400 invalid_agent_address`` /
    ``404 agent_not_found`` (sender); ``400 invalid_idempotency_key``; ``400
    metadata_too_large``; ``403 from_agent_not_owned``; 400/404 for ``to``, then for
    ``reply_to_agent``, each authorized as it is resolved (a refused agent of another user is
    the same 404 as a missing one);
    ``403 cross_tenant_messaging_forbidden`` (a refusal between the caller's own agents);
    the idempotent replay (200) or ``409 idempotency_key_conflict``; ``429 rate_limit_exceeded`` /
    ``429 priority_high_rate_limit``; ``402 quota_exceeded``; ``404 reply_to_not_found``.
    """
    if from_ref is None or not from_ref.strip():
        raise BadRequest("missing_from_agent",
                         "Send the sending agent's id or slug address in X-Cueapi-From-Agent")
    # Held for the whole send: the resolutions below find them in the identity map.
    prefetched = prefetch_agents(from_ref, data.get("to"), data.get("reply_to_agent"))
    sender = resolve_agent(from_ref.strip(), what="Sending agent")
    key = idempotency_key.strip() if idempotency_key else None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest("invalid_idempotency_key",
                         f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters")
    metadata = data.get("metadata") or {}
    if metadata_size(metadata) > MAX_METADATA_BYTES:
        raise BadRequest("metadata_too_large",
                         f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON")
    if sender.user_id != user.id:
        raise Forbidden("from_agent_not_owned",
                        "X-Cueapi-From-Agent names an agent you do not own")
    # Each agent is authorized as soon as it is resolved: a refused foreign ``to`` must answer
    # before ``reply_to_agent`` is looked at, exactly as a missing one does.
    recipient = resolve_agent(data["to"], what=RECIPIENT)
    _authorize(sender, recipient, authorization.MESSAGE, key, ref=data["to"], what=RECIPIENT)
    reply_agent = None
    if data.get("reply_to_agent"):
        reply_agent = resolve_agent(data["reply_to_agent"], what=REPLY_AGENT)
        _authorize(sender, reply_agent, authorization.REPLY_CHAIN, key,
                   ref=data["reply_to_agent"], what=REPLY_AGENT)
    del prefetched  # every agent is resolved (and referenced) by now

    now = utcnow()
    requested = data.get("priority", 3)
    digest = fingerprint(recipient.id, data) if key is not None else None  # (replays only)
    if key is not None:
        replay = _replay(user.id, key, digest, now)
        if replay is not None:
            db.session.rollback()
            return replay
    quotas.check_send_rate(user.id, user.plan, now)
    priority = quotas.check_priority(user.id, sender.id, recipient.id, requested, now)
    quotas.check_monthly_quota(user.id, user.monthly_message_limit, now)

    message_id = new_id("msg_")
    thread_id = message_id
    if data.get("reply_to"):
        parent = db.session.get(Message, data["reply_to"])
        if parent is None or user.id not in (parent.user_id, parent.to_user_id):
            raise NotFound("reply_to_not_found", f"Message {data['reply_to']} not found")
        thread_id = parent.thread_id
    send_at = data.get("send_at")
    if send_at is not None and send_at <= now:
        send_at = None  # a past send_at means "now"
    values = dict(
        id=message_id, user_id=user.id, to_user_id=recipient.user_id,
        from_agent_id=sender.id, to_agent_id=recipient.id, thread_id=thread_id,
        reply_to=data.get("reply_to"), subject=data.get("subject"), body=data["body"],
        priority=priority, requested_priority=requested,
        expects_reply=bool(data.get("expects_reply")),
        reply_to_agent_id=reply_agent.id if reply_agent else None, delivery_state="queued",
        meta=metadata, idempotency_key=key, correlation_id=data.get("correlation_id"),
        dispatch_priority_bucket=priority, created_at=now, send_at=send_at,
        expires_at=now + timedelta(days=current_app.config["MESSAGE_TTL_DAYS"]),
        push_attempts=0,
        # Push is decided at send time: a recipient with a webhook gets a delivery job.
        next_attempt_at=(send_at or now) if recipient.webhook_url else None,
    )
    # The message, its idempotency key, its ``message.delivered`` event and the monthly
    # counter are one write (one statement on PostgreSQL): a concurrent send holding the same
    # key fails as a whole, and no event exists without its message or message without its
    # event.  The response is built from ``message`` as written.
    writes = [(_message_insert(), _message_params(values)),
              events.message_delivered_write(
                  message_id=message_id, sender_agent_id=sender.id,
                  recipient_agent_id=recipient.id, thread_id=thread_id,
                  reply_to=values["reply_to"], priority=priority,
                  correlation_id=values["correlation_id"], subject=values["subject"],
                  body=values["body"], now=now)]
    if key is not None:
        writes.append((_key_insert(), {"key_user_id": user.id, "key_key": key,
                                       "key_message_id": message_id, "key_fingerprint": digest,
                                       "key_created_at": now}))
    writes.append(quotas.count_message_write(user.id, now))
    try:
        insert_together(*writes)
        touch_presence(sender, now)
        commit_keeping_state()
    except IntegrityError as exc:
        db.session.rollback()
        if key is None or "message_idempotency_keys.key" not in violated_columns(exc):
            raise
        # A concurrent send with the same key won the race: replay its message.
        replay = _replay(user.id, key, digest, utcnow())
        db.session.rollback()
        if replay is None:
            raise
        return replay
    events.events_emitted((recipient.id,))
    message = built_like_loaded(Message, values)  # as written: the response's object
    return SendResult(message, created=True, downgraded=priority != requested)


def _visible_message(user_id, message_id: str) -> Message:
    if not _MESSAGE_ID.fullmatch(message_id or ""):
        raise NotFound("message_not_found", "Message not found")
    message = db.session.get(Message, message_id)
    if message is None or user_id not in (message.user_id, message.to_user_id):
        raise NotFound("message_not_found", "Message not found")
    return message


def get_message(user_id, message_id: str) -> Message:
    """A message visible to the caller (sender's user or recipient's owner), else ``404``."""
    return _visible_message(user_id, message_id)


def _recipient_message(user_id, message_id: str) -> Message:
    message = _visible_message(user_id, message_id)
    if message.to_user_id != user_id:
        raise Forbidden("not_message_recipient",
                        "Only the owner of the recipient agent can mark a message read or acked")
    return message


def mark_read(user_id, message_id: str) -> dict[str, Any]:
    """Move the message to ``read`` (idempotent); ``409`` from ``acked``/``expired``."""
    message = _recipient_message(user_id, message_id)
    now = utcnow()
    db.session.execute(
        update(Message)
        .where(Message.id == message.id,
               Message.delivery_state.not_in(("read", "acked", "expired")))
        .values(delivery_state="read", read_at=now)
    )
    db.session.commit()
    db.session.refresh(message)
    if message.delivery_state != "read":
        raise Conflict("invalid_state_transition",
                       f"A message in state {message.delivery_state!r} cannot be marked read")
    return {"delivery_state": "read", "read_at": message.read_at, "acked_at": None}


def acknowledge(user_id, message_id: str) -> dict[str, Any]:
    """Move the message to ``acked`` (idempotent, terminal); ``409`` from ``expired``."""
    message = _recipient_message(user_id, message_id)
    now = utcnow()
    db.session.execute(
        update(Message)
        .where(Message.id == message.id, Message.delivery_state.not_in(("acked", "expired")))
        .values(delivery_state="acked", acked_at=now)
    )
    db.session.commit()
    db.session.refresh(message)
    if message.delivery_state != "acked":
        raise Conflict("invalid_state_transition",
                       f"A message in state {message.delivery_state!r} cannot be acked")
    return {"delivery_state": "acked", "read_at": None, "acked_at": message.acked_at}
