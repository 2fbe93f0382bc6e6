"""Message quotas (wire §1.8, §10.8): per-minute plan limit, priority 4-5 rules, monthly quota.

There is no Redis: every window is counted in the database from the ``messages`` table (the
sender's rows created inside the window), and the monthly counter is a durable row per
(user, calendar month UTC).  Only accepted, non-replayed sends create rows, so rejected
requests never extend a window.  Under heavy concurrency a window may admit a few more sends
than its limit (two requests can count before either inserts); the limits are anti-abuse
ceilings, not billing boundaries.

Every check is skipped when ``DISABLE_QUOTA_ENFORCEMENT`` is true; the monthly counter still
increments.
"""

from __future__ import annotations

import functools
import math
import uuid
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name
from app.errors import AppError
from app.extensions import db
from app.messaging.models import Message, MessageMonthlyCount
from app.ratelimit import retry_message

#: Sends per minute by plan; any other plan gets the free rate.
PLAN_MESSAGES_PER_MINUTE = {"free": 10, "pro": 60, "scale": 300}
MINUTE = 60
HOUR = 3600
#: Priority 4-5 sends per sending user per hour (over → 429 priority_high_rate_limit).
HIGH_PRIORITY_PER_USER_PER_HOUR = 10
#: Priority 4-5 sends per (from agent, to agent) per hour (over → silently downgraded to 3).
HIGH_PRIORITY_PER_PAIR_PER_HOUR = 5
HIGH_PRIORITY = 4
DOWNGRADED_PRIORITY = 3


def enforced() -> bool:
    """False when the deployment switched quotas off (``DISABLE_QUOTA_ENFORCEMENT``)."""
    return not current_app.config["DISABLE_QUOTA_ENFORCEMENT"]


def month_start(now: datetime) -> date:
    """First day of ``now``'s calendar month (UTC)."""
    return date(now.year, now.month, 1)


def _retry_after(oldest: datetime | None, window: int, now: datetime) -> int:
    if oldest is None:
        return window
    return max(1, math.ceil((oldest + timedelta(seconds=window) - now).total_seconds()))


def per_minute_limit(plan: str) -> int:
    """Messages per minute allowed for ``plan``."""
    return PLAN_MESSAGES_PER_MINUTE.get(plan, PLAN_MESSAGES_PER_MINUTE["free"])


def check_send_rate(user_id: uuid.UUID, plan: str, now: datetime) -> None:
    """``429 rate_limit_exceeded`` (with ``limit``, ``window_seconds``, ``Retry-After``) when
    the user already sent their plan's messages in the last minute."""
    if not enforced():
        return
    limit = per_minute_limit(plan)
    since = now - timedelta(seconds=MINUTE)
    count, oldest = db.session.execute(
        select(func.count(), func.min(Message.created_at))
        .where(Message.user_id == user_id, Message.created_at > since)
    ).one()
    if count >= limit:
        retry = _retry_after(oldest, MINUTE, now)
        raise AppError("rate_limit_exceeded",
                       retry_message(retry, f"Message rate limit of {limit} per minute "
                                            "exceeded"),
                       429, headers={"Retry-After": str(retry)}, limit=limit,
                       window_seconds=MINUTE)


def check_priority(user_id: uuid.UUID, from_agent_id: str, to_agent_id: str, priority: int,
                   now: datetime) -> int:
    """Apply the priority 4-5 rules and return the effective priority.

    More than :data:`HIGH_PRIORITY_PER_USER_PER_HOUR` high-priority requests by the user in an
    hour → ``429 priority_high_rate_limit``; more than :data:`HIGH_PRIORITY_PER_PAIR_PER_HOUR`
    high-priority messages between the same two agents → priority 3 (the caller reports the
    downgrade in a header).
    """
    if priority < HIGH_PRIORITY or not enforced():
        return priority
    since = now - timedelta(seconds=HOUR)
    count, oldest = db.session.execute(
        select(func.count(), func.min(Message.created_at))
        .where(Message.user_id == user_id, Message.created_at > since,
               Message.requested_priority >= HIGH_PRIORITY)
    ).one()
    if count >= HIGH_PRIORITY_PER_USER_PER_HOUR:
        retry = _retry_after(oldest, HOUR, now)
        raise AppError("priority_high_rate_limit",
                       retry_message(retry, f"At most {HIGH_PRIORITY_PER_USER_PER_HOUR} "
                                            "priority 4-5 messages per hour; send with "
                                            "priority 3 or wait"), 429,
                       headers={"Retry-After": str(retry)},
                       limit=HIGH_PRIORITY_PER_USER_PER_HOUR, window_seconds=HOUR)
    pair = db.session.execute(
        select(func.count()).where(Message.from_agent_id == from_agent_id,
                                   Message.to_agent_id == to_agent_id,
                                   Message.created_at > since,
                                   Message.priority >= HIGH_PRIORITY)
    ).scalar_one()
    if pair >= HIGH_PRIORITY_PER_PAIR_PER_HOUR:
        return DOWNGRADED_PRIORITY
    return priority


def messages_this_month(user_id: uuid.UUID, now: datetime) -> int:
    """The user's counter for ``now``'s month (0 when nothing was sent)."""
    value = db.session.execute(
        select(MessageMonthlyCount.count).where(MessageMonthlyCount.user_id == user_id,
                                                MessageMonthlyCount.month == month_start(now))
    ).scalar_one_or_none()
    return value or 0


def check_monthly_quota(user_id: uuid.UUID, limit: int, now: datetime) -> None:
    """``402 quota_exceeded`` (with ``current`` and ``limit``) once the month's count reached
    the user's ``monthly_message_limit``; no grace period."""
    if not enforced():
        return
    current = messages_this_month(user_id, now)
    if current >= limit:
        raise AppError("quota_exceeded",
                       f"Monthly message limit reached ({current}/{limit}); it resets on the "
                       "first day of next month (UTC)", 402, current=current, limit=limit)


def count_message_write(user_id: uuid.UUID, now: datetime):
    """``(statement, parameters)`` adding one to the user's monthly counter, to run atomically
    with the message's insert (:func:`app.db.insert_together`); an upsert, so concurrent first
    sends of a month never collide."""
    return (_count_statement(dialect_name()),
            {"count_user_id": user_id, "count_month": month_start(now)})


@functools.cache
def _count_statement(dialect: str):
    """The counter upsert, built once per dialect on the table (no ORM unit of work)."""
    table = MessageMonthlyCount.__table__
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return insert.values(user_id=bindparam("count_user_id"), month=bindparam("count_month"),
                         count=1).on_conflict_do_update(
        index_elements=[table.c.user_id, table.c.month], set_={"count": table.c.count + 1})
