"""Cue services: create, list, get, update, delete and fire (wire §7)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app, g, request
from sqlalchemy import Row, bindparam, func, null, select, true
from sqlalchemy.exc import IntegrityError

from app.agents_live.services.attachments import requested_delivery_mode
from app.auth.identity import CallerExtras
from app.db import utcnow, violated_columns
from app.errors import BadRequest, Conflict
from app.extensions import db
from app.outbound.ssrf import validate_url
from app.quotas.cues import check_cue_limit
from app.scheduling import schedule as sched
from app.scheduling import totals
from app.scheduling.models import (
    Cue,
    Execution,
    UserCueTotal,
    Worker,
    effective_payload,
)
from app.scheduling.services import fire_options
from app.scheduling.services.lookup import get_cue
from app.users.models import User

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1_048_576
DEFAULT_RETRY = {"max_attempts": 3, "backoff_minutes": [1, 5, 15]}
DEFAULT_ON_FAILURE = {"email": True, "webhook": None, "pause": False}
NO_WORKER_WARNING = ("No active workers found: none sent a heartbeat in the last {seconds} "
                     "seconds. Start a cueapi-worker to process this cue; its executions wait "
                     "until a worker claims them")


def _duplicate_name(name: str) -> Conflict:
    return Conflict("duplicate_cue_name", f"You already have a cue named {name!r}")


def _name_taken(user: User, name: str, exclude_id: str | None = None) -> bool:
    query = select(Cue.id).where(Cue.user_id == user.id, Cue.name == name)
    if exclude_id:
        query = query.where(Cue.id != exclude_id)
    return db.session.scalar(query.limit(1)) is not None


def _check_payload(payload: Any) -> dict:
    """Validation steps 4–5: serialisable, no NUL, at most 1 MiB of UTF-8."""
    if payload is None:
        return {}
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise BadRequest("invalid_payload", "payload must be JSON-serialisable") from None
    if "\x00" in text or "\\u0000" in text:
        raise BadRequest("invalid_payload", "payload must not contain NUL characters")
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise BadRequest("invalid_payload_size",
                         f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return payload


def _resolve_schedule(spec: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Validation steps 6–7: the stored schedule columns and the first ``next_run``."""
    timezone = spec.get("timezone") or "UTC"
    sched.zone(timezone)  # 422 invalid_timezone before any schedule problem
    kind = spec.get("type")
    if kind == "recurring":
        cron = sched.check_cron(spec.get("cron"))
        return {"schedule_type": kind, "schedule_cron": cron, "schedule_at": None,
                "schedule_timezone": timezone,
                "next_run": sched.next_cron_time(cron, timezone, now)}
    if kind == "once":
        at = spec.get("at")
        if at is None:
            raise BadRequest("invalid_schedule", "schedule.at is required for once cues")
        at = sched.as_utc(at)
        if at <= now:
            raise BadRequest("invalid_schedule", "schedule.at must be in the future")
        return {"schedule_type": kind, "schedule_cron": None, "schedule_at": at,
                "schedule_timezone": timezone, "next_run": at}
    raise BadRequest("invalid_schedule",
                     f"schedule.type must be 'recurring' or 'once', not {kind!r}")


def _on_failure(value: dict | None) -> dict:
    """Step 8: merged ``on_failure`` with its webhook SSRF-checked."""
    merged = {**DEFAULT_ON_FAILURE, **(value or {})}
    if merged.get("webhook"):
        merged["webhook"] = validate_url(merged["webhook"], field="on_failure.webhook")
    else:
        merged["webhook"] = None
    return merged


def _retry(value: dict | None) -> tuple[int, list[int]]:
    merged = {**DEFAULT_RETRY, **(value or {})}
    return merged["max_attempts"], list(merged["backoff_minutes"])


def live_worker_exists(user: User, now: datetime) -> bool:
    """True when one of the user's workers sent a heartbeat within the heartbeat timeout."""
    cutoff = now - timedelta(seconds=current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])
    return db.session.scalar(
        select(Worker.id).where(Worker.user_id == user.id, Worker.last_heartbeat >= cutoff)
        .limit(1)) is not None


def create_cue(user: User, data: dict[str, Any], now: datetime | None = None
               ) -> tuple[Cue, str | None]:
    """Create a cue for ``user`` from a validated ``CueCreate`` body.

    Checks run in the wire order of §7.2 (name clash, quota, callback URL, payload, size,
    time zone, schedule, failure webhook) so the first problem a client sees is the one the
    protocol promises.  Returns the cue and the "no live worker" warning (worker cues only).
    Raises 409 ``duplicate_cue_name`` (also when a concurrent request wins the unique key),
    403 ``cue_limit_exceeded``, 400 ``invalid_callback_url`` / ``invalid_payload`` /
    ``invalid_payload_size`` / ``invalid_schedule``, 422 ``invalid_timezone``.
    """
    now = now or utcnow()
    name = data["name"]
    if _name_taken(user, name):
        raise _duplicate_name(name)
    check_cue_limit(user)
    transport = data.get("transport") or "webhook"
    callback = data.get("callback") or {}
    warning = None
    url = None
    if transport == "webhook":
        url = validate_url(callback.get("url"), field="callback.url")
    else:
        url = callback.get("url") or None  # never called for worker cues, so not SSRF-checked
        if not live_worker_exists(user, now):
            warning = NO_WORKER_WARNING.format(
                seconds=current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])
    payload = _check_payload(data.get("payload"))
    schedule = _resolve_schedule(data["schedule"], now)
    on_failure = _on_failure(data.get("on_failure"))
    max_attempts, backoff = _retry(data.get("retry"))
    verification = (data.get("verification") or {}).get("mode")

    cue = Cue(user_id=user.id, name=name, description=data.get("description"),
              status="active", transport=transport, callback_url=url,
              callback_method=callback.get("method") or "POST",
              callback_headers=callback.get("headers") or {}, payload=payload,
              retry_max_attempts=max_attempts, retry_backoff_minutes=backoff,
              on_failure=on_failure, verification_mode=verification, run_count=0,
              fired_count=0, created_at=now, updated_at=now, **schedule)
    db.session.add(cue)
    _commit_or_duplicate(name)
    return cue, warning


def _commit_or_duplicate(name: str) -> None:
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if {"cues.user_id", "cues.name"} & violated_columns(exc):
            raise _duplicate_name(name) from None
        raise


def list_cues(user: User, status: str | None, limit: int, offset: int
              ) -> tuple[list[Row], int]:
    """The user's cues, newest first, optionally of one ``status``; and the filtered total.

    The page is read off ``ix_cues_user_created``, so it costs the same for 20 cues and for
    100,000.  The unfiltered total is the trigger-kept counter (:mod:`app.scheduling.totals`),
    read in the page's statement; a ``status`` total is counted from the index, in a second
    statement.  The cues come back as read-only rows with the table's columns (typed like the
    model's attributes), not ORM objects: a page is only presented, and building 20 tracked
    objects cost more than the query.  When the caller's key (or delegated) lookup already read
    this page (:data:`CUE_PAGE_WITH_CALLER`), the page costs no statement of its own.
    """
    from app.auth.identity import caller_extras

    params = {"user_id": user.id, "status": status, "limit": limit, "offset": offset}
    prefetched = caller_extras(CUE_PAGE_WITH_CALLER.name, user.id)
    if prefetched is not None and g.get("cue_page_read") == (status, limit, offset):
        rows = [row for row in prefetched if row.id is not None]  # no cues: one empty row
        total = prefetched[0]._total
    else:
        rows = db.session.execute(_cue_page(status is not None), params).all()
        total = rows[0]._total if rows else None
        if not rows and offset == 0 and status is None:
            return [], 0
    if status is not None or (total is None and offset > 0):
        total = db.session.scalar(_cue_count(status is not None), params)
    return rows, int(total or 0)


def _cue_filter(with_status: bool):
    columns = Cue.__table__.c
    condition = columns.user_id == bindparam("user_id")
    if with_status:
        condition = condition & (columns.status == bindparam("status"))
    return condition


def _page_order() -> tuple:
    return Cue.__table__.c.created_at.desc(), Cue.__table__.c.id.desc()


def _cue_total(user_id):
    """The user's cue counter as a scalar subquery (NULL when the user has no cues)."""
    totals = UserCueTotal.__table__.c
    return select(totals.cues).where(totals.user_id == user_id).scalar_subquery()


@cache
def _cue_page(with_status: bool):
    """A page of cues, with the unfiltered total when there is no filter; built once (building
    costs more than running)."""
    total = null() if with_status else _cue_total(bindparam("user_id"))
    return (select(Cue.__table__, total.label("_total"))
            .where(_cue_filter(with_status))
            .order_by(*_page_order())
            .limit(bindparam("limit")).offset(bindparam("offset")))


@cache
def _cue_count(with_status: bool):
    if with_status:
        return select(func.count()).select_from(Cue.__table__).where(_cue_filter(True))
    return _cue_total(bindparam("user_id")).element


# --- the page read with the caller's lookup ----------------------------------------------------
# ``GET /v1/cues`` by key or delegation reads its page in the statement that looks the caller up
# (the user row outer-joined to a page of its cues and to its cue counter): one round trip
# instead of two, about a sixth of a page's time on PostgreSQL.  PostgreSQL joins the page as a
# LATERAL subquery, so it is read off the index in page order; a plain join would make it sort
# all of the user's cues first.  SQLite has no LATERAL, and needs none: it sees that the user
# lookup yields one row, and reads the joined cues in index order.

def _page_columns(with_status: bool, lateral: bool):
    def columns() -> tuple:
        page = _page_source(with_status, lateral)
        total = null() if with_status else UserCueTotal.__table__.c.cues
        return (*page.c, total.label("_total"))
    return columns


@cache
def _page_source(with_status: bool, lateral: bool):
    """The joined cues: a LATERAL page of them (PostgreSQL), or the table itself."""
    from app.users.models import User

    if not lateral:
        return Cue.__table__
    cues = Cue.__table__.c
    condition = cues.user_id == User.__table__.c.id
    if with_status:
        condition = condition & (cues.status == bindparam("page_status"))
    return (select(Cue.__table__).where(condition).order_by(*_page_order())
            .limit(bindparam("page_limit")).offset(bindparam("lateral_offset"))
            .lateral("page"))


def _page_join(with_status: bool, lateral: bool):
    from app.users.models import User

    def joins() -> tuple:
        users = User.__table__.c
        page = _page_source(with_status, lateral)
        if page is Cue.__table__:
            onclause = page.c.user_id == users.id
            if with_status:
                onclause = onclause & (page.c.status == bindparam("page_status"))
        else:
            onclause = true()
        joined = ((page, onclause),)
        if not with_status:
            totals = UserCueTotal.__table__
            joined += ((totals, totals.c.user_id == users.id),)
        return joined

    return joins


def _page_order_of(with_status: bool, lateral: bool):
    def order() -> tuple:
        page = _page_source(with_status, lateral)
        return page.c.created_at.desc(), page.c.id.desc()
    return order

def _page_params(with_status: bool, lateral: bool):
    """The page's parameters from the query string, or None when it does not parse (the view's
    validation answers then); the view uses the rows only if its validated query agrees.

    The lookup cuts its rows by ``page_limit`` / ``page_offset``; where the LATERAL page is
    already cut (PostgreSQL, at ``lateral_offset``), the outer offset is 0.
    """

    def params() -> dict | None:
        try:
            limit = int(request.args.get("limit", 50))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            return None
        status = request.args.get("status") if with_status else None
        if not (1 <= limit <= 100 and 0 <= offset <= 10_000_000):
            return None
        g.cue_page_read = (status, limit, offset)
        return {"page_status": status, "page_limit": limit,
                "page_offset": 0 if lateral else offset, "lateral_offset": offset}

    return params


def _page_extras(with_status: bool, lateral: bool) -> CallerExtras:
    return CallerExtras("cue_page", _page_columns(with_status, lateral),
                        _page_params(with_status, lateral), _page_join(with_status, lateral),
                        _page_order_of(with_status, lateral))


#: The page extras by (``status`` filter, LATERAL page).  One object per dialect's shape, so the
#: lookup statements cached per extras object are never built for one dialect and run on the
#: other (a process serving two databases: the test suite).
_PAGE_EXTRAS = {(with_status, lateral): _page_extras(with_status, lateral)
                for with_status in (False, True) for lateral in (False, True)}
CUE_PAGE_WITH_CALLER = _PAGE_EXTRAS[False, False]


def cue_page_with_caller() -> CallerExtras:
    """The page extras for this request (with or without the ``status`` filter)."""
    return _PAGE_EXTRAS["status" in request.args, db.engine.dialect.name == "postgresql"]


def cue_detail(user: User, cue_id: str, limit: int, offset: int
               ) -> tuple[Cue, list[Execution], int]:
    """The cue, one page of its executions (newest first) and their total."""
    cue = get_cue(user, cue_id)
    executions = db.session.scalars(
        select(Execution).where(Execution.cue_id == cue.id)
        .order_by(Execution.created_at.desc(), Execution.scheduled_for.desc())
        .limit(limit).offset(offset)).all()
    return cue, list(executions), totals.cue_executions(cue.id)


def update_cue(user: User, cue_id: str, data: dict[str, Any], now: datetime | None = None
               ) -> Cue:
    """Apply a validated ``CueUpdate`` body (wire §7.5).

    Only given fields change, in the order name/description → callback → payload → retry →
    verification → on_failure → schedule → status.  ``callback`` always overwrites ``method``
    and ``headers`` (to ``POST`` / ``{}`` when omitted), as the SDK relies on.  Renaming onto an
    existing name is 409 ``duplicate_cue_name`` (also under a race, via the unique key).
    """
    now = now or utcnow()
    cue = get_cue(user, cue_id, for_update=True)
    if "name" in data and data["name"] != cue.name:
        if _name_taken(user, data["name"], exclude_id=cue.id):
            raise _duplicate_name(data["name"])
        cue.name = data["name"]
    if "description" in data:
        cue.description = data["description"]
    if "callback" in data:
        callback = data["callback"] or {}
        if callback.get("url") is not None:
            if cue.transport == "webhook":
                cue.callback_url = validate_url(callback["url"], field="callback.url")
            else:
                cue.callback_url = callback["url"] or None
        cue.callback_method = callback.get("method") or "POST"
        cue.callback_headers = callback.get("headers") or {}
    if "payload" in data:
        cue.payload = _check_payload(data["payload"])
    if "retry" in data:
        cue.retry_max_attempts, cue.retry_backoff_minutes = _retry(data["retry"])
    if "verification" in data:
        cue.verification_mode = (data["verification"] or {}).get("mode")
    if "on_failure" in data:
        cue.on_failure = _on_failure(data["on_failure"])
    if "schedule" in data:
        resolved = _resolve_schedule(data["schedule"], now)
        for key, value in resolved.items():
            setattr(cue, key, value)
        if cue.status != "active":
            cue.next_run = None
    if "status" in data:
        _set_status(cue, data["status"], now)
    cue.updated_at = now
    _commit_or_duplicate(cue.name)
    return cue


def _set_status(cue: Cue, status: str, now: datetime) -> None:
    cue.status = status
    if status == "paused":
        cue.next_run = None
    elif cue.schedule_type == "recurring":
        cue.next_run = sched.next_cron_time(cue.schedule_cron, cue.schedule_timezone, now)
    else:
        # A resumed once cue fires at its stored time, even if that has passed (next tick).
        cue.next_run = cue.schedule_at


def delete_cue(user: User, cue_id: str) -> None:
    """Hard-delete the cue; its executions go with it (ON DELETE CASCADE)."""
    cue = get_cue(user, cue_id)
    db.session.delete(cue)
    db.session.commit()


def fire_cue(user: User, cue_id: str, send_at: datetime | None, now: datetime | None = None,
             *, payload_override: dict[str, Any] | None = None,
             merge_strategy: str | None = None, idempotency_key: str | None = None
             ) -> Execution:
    """Create a ``manual_fire`` execution now, or at a future ``send_at`` (naive = UTC).

    Works whatever the cue's status or schedule; does not touch ``fired_count`` and is not
    subject to the monthly execution limit.  A future ``send_at`` holds the execution: webhook
    delivery and worker claiming both wait for ``scheduled_for``.  ``payload_override`` /
    ``merge_strategy`` / ``idempotency_key``: see :mod:`.fire_options` (the combined payload
    is checked like a cue payload: 400 ``invalid_payload`` / ``invalid_payload_size``; a key
    reused with other options is 409 ``idempotency_key_conflict``).
    """
    now = now or utcnow()
    cue = get_cue(user, cue_id)
    when = now
    if send_at is not None and sched.as_utc(send_at) > now:
        when = sched.as_utc(send_at)
    if payload_override is not None:
        merge_strategy = merge_strategy or "merge"
        _check_payload(effective_payload(cue.payload, payload_override, merge_strategy))
    else:
        merge_strategy = None
    idempotency = None
    if idempotency_key is not None:
        digest = fire_options.fingerprint(
            payload_override, merge_strategy,
            sched.as_utc(send_at) if send_at is not None else None)
        replay = fire_options.replayed_fire(cue.id, idempotency_key, digest, now)
        if replay is not None:
            db.session.commit()
            return replay
        idempotency = (idempotency_key, digest)
    try:
        return new_execution(cue, when, "manual_fire", now, payload_override=payload_override,
                             merge_strategy=merge_strategy, idempotency=idempotency,
                             delivery_mode_requested=requested_delivery_mode(cue))
    except IntegrityError as exc:
        if idempotency is None or not fire_options.is_key_violation(violated_columns(exc)):
            raise
        # A concurrent fire with the same key won: answer with its execution.
        replay = fire_options.replayed_fire(cue.id, idempotency_key, idempotency[1], utcnow())
        if replay is None:
            raise
        db.session.commit()
        return replay


def new_execution(cue: Cue, when: datetime, trigger: str, now: datetime,
                  replayed_from=None, *, payload_override: dict[str, Any] | None = None,
                  merge_strategy: str | None = None,
                  idempotency: tuple[str, str] | None = None,
                  delivery_mode_requested=None) -> Execution:
    """Insert a pending execution of ``cue`` at ``when`` and commit.

    ``delivery_mode_requested`` (a value or a SQL expression) is stored as given (wire §7.8).
    Two manual executions of one cue in the same microsecond would collide on the
    ``(cue_id, scheduled_for)`` key; the second is nudged by a microsecond instead of failing.
    ``idempotency`` = ``(key, fingerprint)`` spends a fire idempotency key in the same
    transaction (a concurrent spend of the same key raises ``IntegrityError``).
    """
    for attempt in range(5):
        execution = Execution(cue_id=cue.id, scheduled_for=when + timedelta(microseconds=attempt),
                              status="pending", triggered_by=trigger,
                              replayed_from=replayed_from, attempts=0,
                              payload_override=payload_override,
                              payload_merge_strategy=merge_strategy, created_at=now,
                              updated_at=now, delivery_mode_requested=delivery_mode_requested)
        db.session.add(execution)
        try:
            if idempotency is not None:
                db.session.flush()  # the key row references the execution
                db.session.add(fire_options.key_row(cue.id, *idempotency, execution.id, now))
            db.session.commit()
            return execution
        except IntegrityError as exc:
            db.session.rollback()
            if "executions.scheduled_for" not in violated_columns(exc):
                raise
    raise Conflict("execution_conflict", "Could not create the execution; retry the request")
