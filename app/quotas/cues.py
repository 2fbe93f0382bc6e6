"""Cue quotas: ``active_cue_limit`` (checked on create) and the monthly execution limit
(checked at delivery of scheduler-created executions, wire §13.2).

Both are switched off by ``DISABLE_QUOTA_ENFORCEMENT=true``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name
from app.errors import Forbidden
from app.extensions import db
from app.scheduling.models import Cue, ExecutionUsage
from app.users.models import User

#: Deliveries continue this long after a user first reaches the monthly execution limit.
EXECUTION_LIMIT_GRACE = timedelta(hours=24)
EXECUTION_LIMIT_MESSAGE = "Monthly execution limit reached"


def quotas_enforced() -> bool:
    """False when the deployment switched quotas off (``DISABLE_QUOTA_ENFORCEMENT``)."""
    return not current_app.config["DISABLE_QUOTA_ENFORCEMENT"]


def counted_cues(user_id: uuid.UUID) -> int:
    """Cues that count against ``active_cue_limit``: ``active`` plus ``paused``."""
    return db.session.scalar(
        select(func.count()).select_from(Cue)
        .where(Cue.user_id == user_id, Cue.status.in_(("active", "paused")))) or 0


def check_cue_limit(user: User) -> None:
    """Raise ``403 cue_limit_exceeded`` when one more cue would exceed the user's limit."""
    if not quotas_enforced():
        return
    used = counted_cues(user.id)
    if used >= user.active_cue_limit:
        raise Forbidden("cue_limit_exceeded",
                        f"Cue limit reached ({used} of {user.active_cue_limit} active or paused "
                        "cues); delete or complete a cue, or raise the plan limit",
                        current=used, limit=user.active_cue_limit)


def month_key(now: datetime) -> str:
    """``YYYY-MM`` of ``now`` (UTC calendar month)."""
    return now.strftime("%Y-%m")


def executions_this_month(user_id: uuid.UUID, now: datetime) -> int:
    """The monthly execution counter: successful webhook deliveries this UTC month."""
    return db.session.scalar(
        select(ExecutionUsage.executions)
        .where(ExecutionUsage.user_id == user_id, ExecutionUsage.month == month_key(now))) or 0


def _ensure_usage_row(user_id: uuid.UUID, month: str) -> None:
    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    db.session.execute(
        dialect.insert(ExecutionUsage)
        .values(user_id=user_id, month=month, executions=0)
        .on_conflict_do_nothing(index_elements=["user_id", "month"]))


def count_successful_delivery(user_id: uuid.UUID, now: datetime) -> None:
    """Increment this month's counter (caller commits).

    One ``INSERT … ON CONFLICT DO UPDATE`` on both dialects: atomic under concurrent
    deliveries, and one round trip per delivery.
    """
    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    stmt = dialect.insert(ExecutionUsage).values(user_id=user_id, month=month_key(now),
                                                 executions=1)
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=["user_id", "month"],
        set_={"executions": ExecutionUsage.executions + 1}))


def execution_limit_allows(user: User, now: datetime) -> bool:
    """May a scheduler-created execution of ``user`` be delivered at ``now``?

    Under the limit: yes.  At or over it: a 24 h grace period starts (recorded once per month)
    and deliveries continue until it ends; after that, no.  Always yes when quotas are off.
    The caller commits (the grace start is written in its transaction).
    """
    if not quotas_enforced():
        return True
    month = month_key(now)
    used = executions_this_month(user.id, now)
    if used < user.monthly_execution_limit:
        return True
    _ensure_usage_row(user.id, month)
    db.session.execute(
        update(ExecutionUsage)
        .where(ExecutionUsage.user_id == user.id, ExecutionUsage.month == month,
               ExecutionUsage.limit_reached_at.is_(None))
        .values(limit_reached_at=now))
    started = db.session.scalar(
        select(ExecutionUsage.limit_reached_at)
        .where(ExecutionUsage.user_id == user.id, ExecutionUsage.month == month))
    return started is None or now < started + EXECUTION_LIMIT_GRACE
