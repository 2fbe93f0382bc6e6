"""The read side of the console's pages: keyset-paginated lists and the overview's figures.

Every list is ordered newest first by ``(timestamp, id)`` and paged with a keyset cursor (the
last row's pair), never ``OFFSET``: a page deep in a million executions costs what the first
one does, because each query is an index range scan that stops after one page
(``bench/console_bench.py`` checks the plans on PostgreSQL).  Writes are not here: the views
call the domain services the API and CLI use.

The dialect differences (epoch seconds and hourly buckets of a timestamp) are kept in
:func:`_epoch`, :func:`_whole` and :func:`last_24_hours`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Integer, case, cast, func, or_, select, text, tuple_

from app.auth.models import AuditRecord, ServiceKey, ServicePrincipalRecord
from app.db import dialect_name, utcnow
from app.errors import BadRequest
from app.extensions import db
from app.messaging.models import DELIVERY_STATES, Agent, Message, MessageMonthlyCount
from app.quotas import USAGE_WITH_CALLER
from app.scheduling.models import (
    CUE_STATUSES,
    EXECUTION_STATUSES,
    FAILURE_PREDICATE,
    FAILURE_STATUSES,
    Cue,
    Execution,
)
from app.users.models import User

PAGE_SIZE = 50
_CURSOR_SEPARATOR = "~"


# -- keyset pagination ------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of rows and the cursor of the next (older) page, None on the last page."""

    rows: list[Any]
    next_cursor: str | None


def encode_cursor(at: datetime, key: Any) -> str:
    """The cursor after a row: its timestamp and id."""
    return f"{at.isoformat()}{_CURSOR_SEPARATOR}{key}"


def decode_cursor(raw: str | None, key_type: type = str) -> tuple[datetime, Any] | None:
    """``(timestamp, id)`` of a cursor, None when absent, ``400 invalid_cursor`` when garbled."""
    if not raw:
        return None
    at_text, sep, key_text = raw.partition(_CURSOR_SEPARATOR)
    try:
        if not sep or len(raw) > 200:
            raise ValueError
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError
        key = uuid.UUID(key_text) if key_type is uuid.UUID else key_text
    except ValueError:
        raise BadRequest("invalid_cursor", "The page link is malformed; start again from the "
                                           "first page") from None
    return at, key


def keyset_page(query, at_column, key_column, cursor: tuple[datetime, Any] | None,
                *, row_at=None, row_key=None, size: int = PAGE_SIZE,
                unique_at: bool = False) -> Page:
    """Run ``query`` newest first from ``cursor`` and return one page.

    ``unique_at``: the timestamp alone is unique within the query (one cue's executions), so
    the cursor compares it alone — the index then need not hold the id.  ``row_at`` /
    ``row_key`` read the pair from a result row (default: the columns' names on the row).
    """
    if cursor is not None:
        at, key = cursor
        query = query.where(at_column < at if unique_at
                            else tuple_(at_column, key_column) < tuple_(at, key))
    order = (at_column.desc(),) if unique_at else (at_column.desc(), key_column.desc())
    rows = list(db.session.execute(query.order_by(*order).limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        at_value = row_at(last) if row_at else getattr(last, at_column.key)
        key_value = row_key(last) if row_key else getattr(last, key_column.key)
        next_cursor = encode_cursor(at_value, key_value)
    return Page(rows=rows, next_cursor=next_cursor)


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise BadRequest(f"invalid_{what}", f"Unknown {what} {value[:40]!r}; use one of "
                                            f"{', '.join(allowed)}")
    return value


def _like(text_value: str) -> str:
    escaped = text_value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# -- users ------------------------------------------------------------------------------------


def find_user(ref: str | None) -> User | None:
    """The user an operator names by id, e-mail or slug (exact), or None."""
    ref = (ref or "").strip()
    if not ref:
        return None
    try:
        return db.session.get(User, uuid.UUID(ref))
    except ValueError:
        pass
    return db.session.scalar(select(User).where(
        or_(func.lower(User.email) == ref.lower(), User.slug == ref.lower())).limit(1))


def _messages_this_month():
    from app.quotas.messages import month_start

    counts = MessageMonthlyCount.__table__.c
    return (select(counts.count)
            .where(counts.user_id == User.__table__.c.id,
                   counts.month == month_start(utcnow()))
            .scalar_subquery())


def list_users(search: str | None, state: str | None, cursor: str | None) -> Page:
    """Users newest first, searched by id, or by a fragment of e-mail or slug, with their
    usage this month (active cues, executions, messages) read in the same statement."""
    state = _choice(state, ("active", "inactive"), "state")
    active_cues, executions = USAGE_WITH_CALLER.columns()
    query = select(User, active_cues.label("active_cues"), executions.label("executions"),
                   _messages_this_month().label("messages"))
    search = (search or "").strip()
    if search:
        try:
            query = query.where(User.id == uuid.UUID(search))
        except ValueError:
            pattern = _like(search.lower())
            query = query.where(or_(func.lower(User.email).like(pattern, escape="\\"),
                                    User.slug.like(pattern, escape="\\")))
    if state:
        query = query.where(User.active.is_(state == "active"))
    query = query.params(**USAGE_WITH_CALLER.params())
    return keyset_page(query, User.created_at, User.id, decode_cursor(cursor, uuid.UUID),
                       row_at=lambda r: r[0].created_at, row_key=lambda r: r[0].id)


def user_cue_counts(user_id: uuid.UUID) -> dict[str, int]:
    """The user's cues by status."""
    return dict(db.session.execute(select(Cue.status, func.count()).where(Cue.user_id == user_id)
                                   .group_by(Cue.status)).all())


# -- service principals -----------------------------------------------------------------------


def principals_with_keys() -> list[tuple[ServicePrincipalRecord, list[ServiceKey]]]:
    """Every service principal and its keys (the list behind ``flask services list``)."""
    from app.auth.principals import list_principals

    return list_principals()


# -- cues and executions ----------------------------------------------------------------------


def list_cues(user: User | None, status: str | None, cursor: str | None) -> Page:
    """Cues newest first, optionally of one user and one status, with their owner's e-mail."""
    status = _choice(status, CUE_STATUSES, "status")
    query = select(Cue, User.email).join(User, User.id == Cue.user_id)
    if user is not None:
        query = query.where(Cue.user_id == user.id)
    if status:
        query = query.where(Cue.status == status)
    return keyset_page(query, Cue.created_at, Cue.id, decode_cursor(cursor),
                       row_at=lambda r: r[0].created_at, row_key=lambda r: r[0].id)


def cue_timeline(cue: Cue, cursor: str | None) -> Page:
    """One cue's executions, newest scheduled time first (unique per cue, so the cursor needs
    only the time: an index range scan on ``(cue_id, scheduled_for)``)."""
    query = select(Execution).where(Execution.cue_id == cue.id)
    return keyset_page(query, Execution.scheduled_for, Execution.id,
                       decode_cursor(cursor, uuid.UUID), unique_at=True,
                       row_at=lambda r: r[0].scheduled_for, row_key=lambda r: r[0].id)


def list_failures(status: str | None, cursor: str | None) -> Page:
    """Failed, missed and timed-out executions, newest first, with their cue and owner.

    The condition is the partial index's predicate verbatim (``ix_executions_failures``).
    """
    status = _choice(status, FAILURE_STATUSES, "status")
    query = (select(Execution, Cue.name, Cue.user_id, User.email)
             .join(Cue, Cue.id == Execution.cue_id).join(User, User.id == Cue.user_id)
             .where(text("executions." + FAILURE_PREDICATE)))
    if status:
        query = query.where(Execution.status == status)
    return keyset_page(query, Execution.scheduled_for, Execution.id,
                       decode_cursor(cursor, uuid.UUID),
                       row_at=lambda r: r[0].scheduled_for, row_key=lambda r: r[0].id)


# -- messages ---------------------------------------------------------------------------------


def list_messages(agent: Agent | None, direction: str, state: str | None,
                  cursor: str | None) -> Page:
    """Messages newest first: all, or those ``agent`` received (``to``) or sent (``from``),
    optionally in one delivery state."""
    state = _choice(state, DELIVERY_STATES, "state")
    direction = _choice(direction, ("to", "from"), "direction") or "to"
    sender, recipient = Agent.__table__.alias("sender"), Agent.__table__.alias("recipient")
    query = (select(Message, sender.c.slug.label("from_slug"), recipient.c.slug.label("to_slug"))
             .join(sender, sender.c.id == Message.from_agent_id)
             .join(recipient, recipient.c.id == Message.to_agent_id))
    if agent is not None:
        column = Message.to_agent_id if direction == "to" else Message.from_agent_id
        query = query.where(column == agent.id)
    if state:
        query = query.where(Message.delivery_state == state)
    return keyset_page(query, Message.created_at, Message.id, decode_cursor(cursor),
                       row_at=lambda r: r[0].created_at, row_key=lambda r: r[0].id)


def find_agent(ref: str | None) -> Agent | None:
    """The agent an operator names (``agt_…`` or ``slug@user-slug``), deleted ones included."""
    from app.errors import AppError
    from app.messaging.addressing import resolve_agent

    ref = (ref or "").strip()
    if not ref:
        return None
    try:
        return resolve_agent(ref, include_deleted=True)
    except AppError:
        return None


# -- audit trail ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """The audit page's filters (all optional)."""

    principal: str | None = None
    user_id: uuid.UUID | None = None
    path: str | None = None
    status: int | None = None
    request_id: str | None = None


def parse_audit_filters(args) -> AuditFilters:
    """The filters from the page's query string; ``400`` naming a malformed one."""
    user_raw = (args.get("user") or "").strip()
    status_raw = (args.get("status") or "").strip()
    try:
        user_id = uuid.UUID(user_raw) if user_raw else None
    except ValueError:
        raise BadRequest("invalid_user", "user must be a user id (UUID)") from None
    if status_raw and not (status_raw.isdigit() and 100 <= int(status_raw) <= 599):
        raise BadRequest("invalid_status", "status must be an HTTP status code (100-599)")
    return AuditFilters(principal=(args.get("principal") or "").strip()[:320] or None,
                        user_id=user_id, path=(args.get("path") or "").strip()[:512] or None,
                        status=int(status_raw) if status_raw else None,
                        request_id=(args.get("request_id") or "").strip()[:36] or None)


def list_audit(filters: AuditFilters, cursor: str | None) -> Page:
    """Audit records newest first: service principals' requests and operators' actions.

    Records still buffered in this process are written first, so an operator sees their own.
    """
    from app.auth.audit import flush_audit

    flush_audit()
    query = select(AuditRecord)
    if filters.principal:
        query = query.where(AuditRecord.principal == filters.principal)
    if filters.user_id:
        query = query.where(AuditRecord.user_id == filters.user_id)
    if filters.path:
        escaped = filters.path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(AuditRecord.path.like(escaped + "%", escape="\\"))
    if filters.status:
        query = query.where(AuditRecord.status == filters.status)
    if filters.request_id:
        query = query.where(AuditRecord.request_id == filters.request_id)
    return keyset_page(query, AuditRecord.at, AuditRecord.id, decode_cursor(cursor, uuid.UUID),
                       row_at=lambda r: r[0].at, row_key=lambda r: r[0].id)


# -- overview ---------------------------------------------------------------------------------

#: How the overview groups execution statuses in its outcome chart, in stacking order.
OUTCOME_GROUPS = (
    ("success", ("success",)),
    ("failed", ("failed", "outcome_timeout")),
    ("missed", ("missed",)),
    ("retrying", ("retrying", "retry_ready")),
    ("in progress", ("pending", "delivering", "pending_outcome")),
)
_GROUP_OF = {status: name for name, statuses in OUTCOME_GROUPS for status in statuses}


@dataclass
class HourBucket:
    """One hour of the last 24: execution counts by outcome group and start delays."""

    start: datetime
    counts: dict[str, int] = field(default_factory=dict)
    started: int = 0
    delay_sum: float = 0.0
    delay_max: float | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def delay_avg(self) -> float | None:
        return self.delay_sum / self.started if self.started else None


def _epoch(column):
    """Seconds since 1970 of a timestamp column (the one dialect difference here, with
    :func:`_whole`)."""
    if dialect_name() == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def _whole(expression):
    """The integer part of a non-negative number (SQLite may lack ``floor``)."""
    if dialect_name() == "postgresql":
        return cast(func.floor(expression), Integer)
    return cast(expression, Integer)


def last_24_hours(now: datetime | None = None) -> tuple[list[HourBucket], datetime | None]:
    """Hourly buckets of the executions scheduled in the last 24 hours, and the latest start.

    One grouped query.  ``status IN (every status)`` looks redundant but lets both databases
    serve the time range from the ``(status, scheduled_for)`` index, one range per status,
    instead of scanning the table.
    """
    now = now or utcnow()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=24)
    if dialect_name() == "postgresql":
        # The hour itself (in UTC, whatever the session's time zone) and one interval per row:
        # half the time of the epoch arithmetic below over a busy day (bench/console_bench.py).
        bucket = func.date_trunc("hour", func.timezone("UTC", Execution.scheduled_for))
        delay = func.extract("epoch", Execution.started_at - Execution.scheduled_for)
    else:
        bucket = _whole((_epoch(Execution.scheduled_for) - start.timestamp()) / 3600.0)
        delay = _epoch(Execution.started_at) - _epoch(Execution.scheduled_for)
    bucket = bucket.label("bucket")
    started = Execution.started_at.is_not(None)
    rows = db.session.execute(
        select(bucket, Execution.status, func.count(),
               func.count(Execution.started_at),
               func.sum(case((started, delay), else_=None)),
               func.max(case((started, delay), else_=None)),
               func.max(Execution.started_at))
        .where(Execution.status.in_(EXECUTION_STATUSES),
               Execution.scheduled_for >= start, Execution.scheduled_for < end)
        # By the output name: the expression's bind parameter would make PostgreSQL see the
        # GROUP BY copy as a different expression.
        .group_by(text("bucket"), Execution.status)).all()
    buckets = [HourBucket(start=start + timedelta(hours=i)) for i in range(24)]
    latest_start = None
    for index, status, count, n_started, delay_sum, delay_max, last_started in rows:
        if isinstance(index, datetime):  # PostgreSQL: the UTC hour, without a zone
            index = (index.replace(tzinfo=UTC) - start) // timedelta(hours=1)
        index = int(index)
        if not 0 <= index < 24:
            continue
        b = buckets[index]
        group = _GROUP_OF.get(status, "in progress")
        b.counts[group] = b.counts.get(group, 0) + int(count)
        b.started += int(n_started or 0)
        b.delay_sum += max(float(delay_sum or 0.0), 0.0)
        if delay_max is not None:
            b.delay_max = max(b.delay_max or 0.0, float(delay_max), 0.0)
        if last_started is not None and (latest_start is None or last_started > latest_start):
            latest_start = last_started
    return buckets, latest_start


def oldest_due_pending(now: datetime | None = None) -> datetime | None:
    """The scheduled time of the oldest execution that is due and still ``pending``: a backlog
    the background worker has not picked up (an index range scan)."""
    now = now or utcnow()
    return db.session.scalar(select(func.min(Execution.scheduled_for))
                             .where(Execution.status == "pending",
                                    Execution.scheduled_for <= now))


def message_backlog() -> dict[str, int]:
    """Messages waiting for push delivery or being delivered, by state (index-only counts)."""
    states = ("queued", "delivering", "retry_ready")
    rows = db.session.execute(select(Message.delivery_state, func.count())
                              .where(Message.delivery_state.in_(states))
                              .group_by(Message.delivery_state)).all()
    counts = dict.fromkeys(states, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


def totals() -> dict[str, int]:
    """Users (active / all) and cues by status, for the overview's header."""
    users = db.session.execute(select(func.count(), func.count().filter(User.active))).one()
    cues = dict(db.session.execute(select(Cue.status, func.count())
                                   .group_by(Cue.status)).all())
    return {"users": int(users[0]), "active_users": int(users[1]),
            **{f"cues_{status}": int(cues.get(status, 0)) for status in CUE_STATUSES}}


def redis_status() -> str:
    """``ok`` / ``error`` for a Redis rate-limit store, ``not configured`` for ``memory://``."""
    uri = current_app.config["RATELIMIT_STORAGE_URI"]
    if uri.startswith("memory://"):
        return "not configured"
    limiter = current_app.extensions["cueline_limiter"]
    try:
        return "ok" if limiter.storage.check() else "error"
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return "error"

