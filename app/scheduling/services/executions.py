"""Execution services: listing, the worker pull protocol, outcomes, replay and verification
(wire §8).

Claiming is a conditional ``UPDATE … WHERE status = 'pending'`` so two workers can never both
win one execution; on PostgreSQL the candidate is first picked with ``FOR UPDATE SKIP LOCKED``
so concurrent claimers spread over different rows instead of queueing on one.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, case, func, select, update

from app.alerts.services import raise_outcome_alerts
from app.db import dialect_name, utcnow
from app.errors import BadRequest, Conflict, Forbidden
from app.extensions import db
from app.scheduling.models import Cue, CueExecutionTotal, Execution
from app.scheduling.services.cues import new_execution
from app.scheduling.services.lookup import get_execution
from app.users.models import User

CLAIMABLE_WINDOW = 50
TRIGGER_ALIASES = {"scheduled": "scheduler"}
MAX_METADATA_BYTES = 10_240
REPLAYABLE = ("success", "failed", "missed", "outcome_timeout")
EVIDENCE_KEYS = ("external_id", "result_url", "result_ref", "result_type", "summary",
                 "artifacts")
REQUIRED_EVIDENCE = {"require_external_id": "external_id", "require_result_url": "result_url",
                     "require_artifacts": "artifacts"}


def list_executions(user: User, filters: dict[str, Any]
                    ) -> tuple[list[Execution], int, datetime | None]:
    """The user's executions (newest first), the filtered total and the oldest claim time.

    ``status`` and ``status__in`` are mutually exclusive (400 ``conflicting_filters``); an
    empty ``status__in`` is 400 ``invalid_status_in``.  The page is read off
    ``ix_executions_cue_created`` when a cue is named.  Without filters other than the cue, the
    total comes from the trigger-kept counters and the oldest claim from
    ``ix_executions_cue_claimed`` (cost independent of how many executions there are); other
    filters count the matching rows.
    """
    query = select(Execution).join(Cue, Cue.id == Execution.cue_id).where(Cue.user_id == user.id)
    if "status" in filters and "status__in" in filters:
        raise BadRequest("conflicting_filters", "Use either status or status__in, not both")
    if "status__in" in filters:
        statuses = [s.strip() for s in filters["status__in"].split(",") if s.strip()]
        if not statuses:
            raise BadRequest("invalid_status_in",
                             "status__in must list at least one status (comma separated)")
        query = query.where(Execution.status.in_(statuses))
    if "status" in filters:
        query = query.where(Execution.status == filters["status"])
    if "cue_id" in filters:
        query = query.where(Execution.cue_id == filters["cue_id"])
    if "worker_id" in filters:
        query = query.where(Execution.claimed_by_worker == filters["worker_id"])
    if "outcome_state" in filters:
        query = query.where(Execution.outcome_state == filters["outcome_state"])
    if "triggered_by" in filters:
        # ``scheduled`` is the hosted service's name for what Cueline records as ``scheduler``.
        trigger = filters["triggered_by"]
        query = query.where(Execution.triggered_by == TRIGGER_ALIASES.get(trigger, trigger))
    if COUNTED_FILTERS.isdisjoint(filters):
        summary = (_cue_summary() if "cue_id" in filters else _user_summary())
        total, oldest = db.session.execute(
            summary, {"user_id": user.id, "cue_id": filters.get("cue_id")}).one_or_none() \
            or (0, None)
    else:
        sub = query.subquery()
        total, oldest = db.session.execute(
            select(func.count(), func.min(sub.c.claimed_at)).select_from(sub)).one()
    rows = db.session.scalars(
        query.order_by(Execution.created_at.desc(), Execution.id)
        .limit(filters["limit"]).offset(filters["offset"])).all()
    return list(rows), int(total or 0), oldest


#: Filters whose total is counted by query; without them it comes from the counters.
COUNTED_FILTERS = frozenset({"status", "status__in", "worker_id", "outcome_state",
                             "triggered_by"})


def _oldest_claim(cue_id):
    """The oldest claim of a cue's executions, off the partial index on claimed ones."""
    return (select(func.min(Execution.claimed_at))
            .where(Execution.cue_id == cue_id, Execution.claimed_at.is_not(None))
            .scalar_subquery())


@cache
def _cue_summary():
    """Total and oldest claim of one cue's executions; no row when the cue is not the user's."""
    return (select(CueExecutionTotal.executions, _oldest_claim(Cue.id))
            .select_from(Cue)
            .outerjoin(CueExecutionTotal, CueExecutionTotal.cue_id == Cue.id)
            .where(Cue.id == bindparam("cue_id"), Cue.user_id == bindparam("user_id")))


@cache
def _user_summary():
    """Total and oldest claim over all the user's cues: one counter and one index probe per
    cue, however many executions each has."""
    return (select(func.sum(CueExecutionTotal.executions), func.min(_oldest_claim(Cue.id)))
            .select_from(Cue)
            .outerjoin(CueExecutionTotal, CueExecutionTotal.cue_id == Cue.id)
            .where(Cue.user_id == bindparam("user_id")))


def _claimable_query(user: User, now: datetime):
    """Pending executions of the user's worker cues that are due (§16 #10, #12)."""
    return (select(Execution, Cue)
            .join(Cue, Cue.id == Execution.cue_id)
            .where(Cue.user_id == user.id, Cue.transport == "worker",
                   Execution.status == "pending", Execution.scheduled_for <= now))


def _task_filter(query, task: str | None):
    # Filtered in SQL, before the 50-row window, so one busy task cannot starve another (§16 #11).
    if task is not None:
        query = query.where(_effective_task() == task)
    return query


def _effective_task():
    """``task`` of the payload an execution delivers: a fire's override can change it."""
    override = Execution.payload_override["task"].as_string()
    return case((Execution.payload_merge_strategy == "replace", override),
                else_=func.coalesce(override, Cue.payload["task"].as_string()))


def list_claimable(user: User, task: str | None, now: datetime | None = None
                   ) -> list[dict[str, Any]]:
    """Up to 50 claimable executions, oldest ``scheduled_for`` first."""
    now = now or utcnow()
    query = _task_filter(_claimable_query(user, now), task)
    rows = db.session.execute(
        query.order_by(Execution.scheduled_for, Execution.created_at)
        .limit(CLAIMABLE_WINDOW)).all()
    listed = []
    for execution, cue in rows:
        payload = execution.delivered_payload(cue.payload)
        listed.append({"execution_id": str(execution.id), "cue_id": cue.id,
                       "cue_name": cue.name, "task": payload.get("task"),
                       "scheduled_for": execution.scheduled_for, "payload": payload,
                       "attempt": execution.attempts})
    return listed


def _take(execution_id, worker_id: str, now: datetime) -> bool:
    """Atomically move one pending execution to ``delivering`` for ``worker_id``."""
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == "pending")
        .values(status="delivering", claimed_by_worker=worker_id, claimed_at=now,
                started_at=now, last_attempt_at=now, last_heartbeat_at=None,
                attempts=Execution.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _claim_failed(message: str) -> Conflict:
    return Conflict("claim_failed", message)


def claim_execution(user: User, execution_id: str, worker_id: str,
                    now: datetime | None = None) -> Execution:
    """Claim one execution: it must be a due, pending execution of the user's worker cue."""
    now = now or utcnow()
    execution = get_execution(user, execution_id)
    cue = execution.cue
    if (cue.transport != "worker" or execution.status != "pending"
            or execution.scheduled_for > now):
        db.session.rollback()
        raise _claim_failed("Execution is not claimable (not a pending, due worker execution)")
    if not _take(execution.id, worker_id, now):
        db.session.rollback()
        raise _claim_failed("Execution was claimed by another worker")
    db.session.commit()
    db.session.refresh(execution)
    return execution


def claim_next(user: User, worker_id: str, task: str | None = None,
               now: datetime | None = None) -> Execution:
    """Claim the oldest due pending worker execution of the user (409 when there is none)."""
    now = now or utcnow()
    for _ in range(5):
        query = _task_filter(_claimable_query(user, now), task).with_only_columns(Execution.id)
        query = query.order_by(Execution.scheduled_for, Execution.created_at).limit(1)
        if dialect_name() == "postgresql":
            query = query.with_for_update(of=Execution, skip_locked=True)
        candidate = db.session.scalar(query)
        if candidate is None:
            break
        if _take(candidate, worker_id, now):
            db.session.commit()
            return db.session.get(Execution, candidate)
        db.session.rollback()
    db.session.rollback()
    raise _claim_failed("No pending worker executions to claim")


def heartbeat_execution(user: User, execution_id: str, worker_id: str | None,
                        now: datetime | None = None) -> tuple[Execution, datetime]:
    """Renew the lease of a claimed execution; return it and the new lease end."""
    now = now or utcnow()
    execution = get_execution(user, execution_id, for_update=True)
    if execution.status != "delivering":
        db.session.rollback()
        raise Conflict("execution_not_claiming",
                       f"Execution is {execution.status}, not being worked on")
    if worker_id and execution.claimed_by_worker and worker_id != execution.claimed_by_worker:
        db.session.rollback()
        raise Forbidden("not_execution_owner",
                        "This execution is claimed by a different worker")
    execution.last_heartbeat_at = now
    execution.updated_at = now
    db.session.commit()
    return execution, now + timedelta(seconds=current_app.config["WORKER_CLAIM_TIMEOUT_SECONDS"])


def evidence_from(data: dict[str, Any]) -> dict[str, Any]:
    """The truthy evidence fields of an outcome or evidence body."""
    return {key: data[key] for key in EVIDENCE_KEYS if data.get(key)}


def _outcome_state(success: bool, mode: str | None, evidence: dict[str, Any]) -> str:
    if not success:
        return "reported_failure"
    if mode in (None, "none"):
        return "reported_success"
    if mode == "manual":
        return "verification_pending"
    return "verified_success" if evidence.get(REQUIRED_EVIDENCE[mode]) else "verification_failed"


def record_outcome(user: User, execution_id: str, data: dict[str, Any],
                   now: datetime | None = None) -> tuple[Execution, str]:
    """Record the (write-once) outcome of an execution; return it and its ``outcome_state``.

    Worker executions are completed by the outcome (``success``/``failed``), the cue's
    ``last_run`` / ``run_count`` move and a ``once`` cue is finalised; the alerts the outcome
    raises (``verification_failed``, ``consecutive_failures``) are added in the same
    transaction (:func:`app.alerts.services.raise_outcome_alerts`).  A second report is
    409 ``outcome_already_recorded`` — enforced by a conditional update, so two concurrent
    reports cannot both win.
    """
    now = now or utcnow()
    metadata = data.get("metadata")
    if metadata is not None and len(json.dumps(metadata).encode("utf-8")) > MAX_METADATA_BYTES:
        raise BadRequest("metadata_too_large",
                         f"metadata must encode to at most {MAX_METADATA_BYTES} bytes of JSON")
    execution = get_execution(user, execution_id)
    cue = execution.cue
    evidence = evidence_from(data)
    success = bool(data["success"])
    state = _outcome_state(success, cue.verification_mode, evidence)
    outcome = {"success": success, "result": data.get("result"), "error": data.get("error"),
               "metadata": metadata if metadata is not None else {},
               "recorded_at": now.isoformat()}
    values: dict[str, Any] = {"outcome": outcome, "outcome_state": state,
                              "evidence": evidence or None, "updated_at": now}
    completes = cue.transport == "worker"
    if completes:
        values.update(status="success" if success else "failed",
                      error_message=None if success else data.get("error"))
        if success:
            values["delivered_at"] = now
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == execution.id, Execution.outcome_state.is_(None))
        .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        db.session.rollback()
        raise Conflict("outcome_already_recorded",
                       "An outcome was already recorded for this execution")
    if completes:
        db.session.execute(
            update(Cue).where(Cue.id == cue.id)
            .values(last_run=now, run_count=Cue.run_count + 1, updated_at=now)
            .execution_options(synchronize_session=False))
        if cue.schedule_type == "once" and cue.status == "active" and cue.next_run is None:
            finish_once_cue(cue.id, success, now)
    # In the outcome's transaction: no outcome without its alerts, no alert without it.
    raise_outcome_alerts(user.id, execution.id, cue.id, cue.transport, success, state, now)
    db.session.commit()
    db.session.refresh(execution)
    return execution, state


def finish_once_cue(cue_id: str, success: bool, now: datetime) -> None:
    """A ``once`` cue whose only execution finished becomes ``completed`` or ``failed``."""
    db.session.execute(
        update(Cue).where(Cue.id == cue_id, Cue.schedule_type == "once",
                          Cue.status == "active")
        .values(status="completed" if success else "failed", next_run=None, updated_at=now)
        .execution_options(synchronize_session=False))


def replay_execution(user: User, execution_id: str, now: datetime | None = None
                     ) -> tuple[Execution, Execution]:
    """Create a fresh pending execution from a finished one (409 ``execution_in_flight``)."""
    now = now or utcnow()
    original = get_execution(user, execution_id)
    if original.status not in REPLAYABLE:
        db.session.rollback()
        raise Conflict("execution_in_flight",
                       f"Execution is {original.status}; only finished executions "
                       f"({', '.join(REPLAYABLE)}) can be replayed")
    # A replay delivers what the original did: its payload override goes with it.
    fresh = new_execution(original.cue, now, "replay", now, replayed_from=original.id,
                          payload_override=original.payload_override,
                          merge_strategy=original.payload_merge_strategy)
    return original, fresh
