"""Message push delivery (wire §10.9, §13.3): claim due pushes, send them signed, record the
outcome, recover pushes a lost worker left in ``delivering``.

A message gets a push job at send time when its recipient agent has a ``webhook_url``
(``next_attempt_at`` is set).  Claiming is ``UPDATE … WHERE delivery_state IN ('queued',
'retry_ready') … RETURNING`` over candidates picked with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several worker processes never claim one message twice; on SQLite the guarded
``UPDATE`` alone does it (writes are serialised).  Every state change after the HTTP call is
guarded by ``delivery_state = 'delivering'``: if the recipient read or acked the message
meanwhile, their state wins.

Budget: 4 attempts (1 + 3 retries), waiting 1, 5, 15 minutes, or longer when a 429/503 asks
for it with ``Retry-After``.  Over ``MAX_CONCURRENT_DELIVERIES_PER_USER`` pushes in flight to
one recipient user, a due push is re-queued 30 s later without changing its state.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, func, or_, select, update

from app.db import dialect_name, utcnow
from app.extensions import db
from app.messaging.models import Agent, Message
from app.outbound.http import RETRYABLE, SUCCESS, send
from app.outbound.signing import canonical_json, signature_headers
from app.users.models import User

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
BACKOFF_MINUTES = (1, 5, 15)
CAP_DEFER_SECONDS = 30
EVENT_TYPE = "message.created"
#: Retry-After is honoured for these statuses only (as upstream).
RETRY_AFTER_STATUSES = (429, 503)
CLAIMABLE = ("queued", "retry_ready")


def _due(now: datetime):
    return and_(Message.delivery_state.in_(CLAIMABLE), Message.next_attempt_at.is_not(None),
                Message.next_attempt_at <= now,
                or_(Message.send_at.is_(None), Message.send_at <= now))


def claim_pushes(limit: int, now: datetime | None = None) -> list[tuple[str, int]]:
    """Claim up to ``limit`` due pushes; return ``[(message_id, attempt)]``.

    Pushes to recipient users already at the concurrency cap are deferred 30 s instead.
    """
    if limit <= 0:
        return []
    now = now or utcnow()
    cap = current_app.config["MAX_CONCURRENT_DELIVERIES_PER_USER"]
    candidates = (select(Message.id, Message.to_user_id).where(_due(now))
                  .order_by(Message.priority.desc(), Message.next_attempt_at, Message.id)
                  .limit(limit))
    if dialect_name() == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    rows = db.session.execute(candidates).all()
    if not rows:
        db.session.rollback()
        return []
    users = {row.to_user_id for row in rows}
    in_flight = Counter(dict(db.session.execute(
        select(Message.to_user_id, func.count())
        .where(Message.delivery_state == "delivering", Message.to_user_id.in_(users))
        .group_by(Message.to_user_id)).all()))
    take, defer = [], []
    for row in rows:
        if in_flight[row.to_user_id] < cap:
            in_flight[row.to_user_id] += 1
            take.append(row.id)
        else:
            defer.append(row.id)
    if defer:
        db.session.execute(
            update(Message).where(Message.id.in_(defer), Message.delivery_state.in_(CLAIMABLE))
            .values(next_attempt_at=now + timedelta(seconds=CAP_DEFER_SECONDS))
            .execution_options(synchronize_session=False))
    claimed: list[tuple[str, int]] = []
    if take:
        result = db.session.execute(
            update(Message).where(Message.id.in_(take), Message.delivery_state.in_(CLAIMABLE))
            .values(delivery_state="delivering", claimed_at=now,
                    push_attempts=Message.push_attempts + 1)
            .returning(Message.id, Message.push_attempts)
            .execution_options(synchronize_session=False))
        claimed = [(row[0], row[1]) for row in result]
    db.session.commit()
    return claimed


@dataclass(frozen=True)
class PushRequest:
    """What is sent for one attempt (built fresh each attempt: the secret is read live)."""

    url: str
    body: str
    headers: dict[str, str]


def _address(agent: Agent, user_slug: str) -> dict[str, str]:
    return {"agent_id": agent.id, "slug": f"{agent.slug}@{user_slug}"}


def build_push(message: Message, attempt: int, now: datetime) -> PushRequest | None:
    """The signed request for ``message``; ``None`` when the recipient has no webhook URL
    (or was deleted: its inbox stays readable, but nothing is pushed to it any more).

    ``to.slug`` carries the *recipient's* user slug (upstream wrongly used the sender's).
    Raises ``LookupError`` when the recipient has a URL but no signing secret.
    """
    sender = db.session.get(Agent, message.from_agent_id)
    recipient = db.session.get(Agent, message.to_agent_id)
    if recipient is None or not recipient.webhook_url or recipient.deleted_at is not None:
        return None
    if not recipient.webhook_secret:
        raise LookupError("Recipient agent has no webhook secret")
    slugs = dict(db.session.execute(
        select(User.id, User.slug).where(User.id.in_({message.user_id, message.to_user_id}))
    ).all())
    payload: dict[str, Any] = {
        "id": message.id,
        "from": _address(sender, slugs.get(message.user_id, "")),
        "to": _address(recipient, slugs.get(message.to_user_id, "")),
        "thread_id": message.thread_id,
        "reply_to": message.reply_to,
        "subject": message.subject,
        "body": message.body,
        "priority": message.priority,
        "expects_reply": message.expects_reply,
        "reply_to_agent_id": message.reply_to_agent_id,
        "metadata": message.meta or {},
        "created_at": message.created_at.isoformat(),
    }
    body = canonical_json(payload)
    headers = {
        "Content-Type": "application/json",
        **signature_headers(recipient.webhook_secret, body, now),
        "X-CueAPI-Event-Type": EVENT_TYPE,
        "X-CueAPI-Message-Id": message.id,
        "X-CueAPI-Agent-Id": recipient.id,
        "X-CueAPI-Thread-Id": message.thread_id,
        "X-CueAPI-Attempt": str(attempt),
    }
    return PushRequest(recipient.webhook_url, body, headers)


def _finish(message_id: str, **values: Any) -> bool:
    """Apply the outcome unless the message left ``delivering`` meanwhile."""
    result = db.session.execute(
        update(Message).where(Message.id == message_id, Message.delivery_state == "delivering")
        .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def retry_delay(attempt: int, retry_after: float | None, status: int | None) -> float:
    """Seconds before the next attempt after failed attempt number ``attempt``."""
    own = BACKOFF_MINUTES[min(attempt - 1, len(BACKOFF_MINUTES) - 1)] * 60
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        return max(own, retry_after)
    return own


def deliver_push(message_id: str, attempt: int) -> str:
    """Send attempt ``attempt`` of a claimed push and record the outcome; return it
    (``delivered``, ``retry_ready``, ``failed``, ``queued`` or ``skipped``)."""
    message = db.session.get(Message, message_id)
    if message is None or message.delivery_state != "delivering":
        db.session.rollback()
        return "skipped"
    now = utcnow()
    try:
        push = build_push(message, attempt, now)
    except LookupError as exc:
        _finish(message_id, delivery_state="failed", failed_at=now, claimed_at=None,
                message_dispatch_error=str(exc))
        return "failed"
    if push is None:
        # The recipient dropped its webhook: the message waits in the inbox for a poll.
        _finish(message_id, delivery_state="queued", next_attempt_at=None, claimed_at=None)
        return "queued"
    db.session.rollback()  # no transaction held open across the HTTP call
    result = send("POST", push.url, body=push.body, headers=push.headers,
                  timeout=float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]))
    done = utcnow()
    if result.outcome == SUCCESS:
        ok = _finish(message_id, delivery_state="delivered", delivered_at=done, claimed_at=None,
                     next_attempt_at=None, message_dispatch_error=None)
        return "delivered" if ok else "skipped"
    if result.outcome == RETRYABLE and attempt < MAX_ATTEMPTS:
        delay = retry_delay(attempt, result.retry_after, result.status_code)
        ok = _finish(message_id, delivery_state="retry_ready", claimed_at=None,
                     next_attempt_at=done + timedelta(seconds=delay),
                     message_dispatch_error=result.error)
        return "retry_ready" if ok else "skipped"
    ok = _finish(message_id, delivery_state="failed", failed_at=done, claimed_at=None,
                 next_attempt_at=None, message_dispatch_error=result.error)
    return "failed" if ok else "skipped"


def recover_stale_pushes(now: datetime | None = None) -> int:
    """Pushes stuck in ``delivering`` longer than ``MESSAGE_DELIVERY_STALE_AFTER_SECONDS``
    (their worker died): retry at once if attempts remain, else fail.  Returns how many."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=current_app.config["MESSAGE_DELIVERY_STALE_AFTER_SECONDS"])
    stale = and_(Message.delivery_state == "delivering", Message.claimed_at < cutoff)
    retried = db.session.execute(
        update(Message).where(stale, Message.push_attempts < MAX_ATTEMPTS)
        .values(delivery_state="retry_ready", next_attempt_at=now, claimed_at=None,
                message_dispatch_error="Delivery attempt did not finish (worker lost)")
        .execution_options(synchronize_session=False)).rowcount
    failed = db.session.execute(
        update(Message).where(stale, Message.push_attempts >= MAX_ATTEMPTS)
        .values(delivery_state="failed", failed_at=now, claimed_at=None, next_attempt_at=None,
                message_dispatch_error="Delivery attempt did not finish (worker lost); "
                                       "no attempts left")
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if retried or failed:
        log.warning("message push recovery: %d retried, %d failed", retried, failed)
    return retried + failed


def release_pushes(message_ids: list[str]) -> int:
    """Put pushes this process still has in flight back in the queue (shutdown); the
    interrupted attempt is not counted."""
    if not message_ids:
        return 0
    count = db.session.execute(
        update(Message).where(Message.id.in_(message_ids),
                              Message.delivery_state == "delivering")
        .values(delivery_state="retry_ready", next_attempt_at=utcnow(), claimed_at=None,
                push_attempts=Message.push_attempts - 1)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count

