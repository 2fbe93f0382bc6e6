"""Sweeps of the execution queue: deliveries interrupted by a crash, worker claims whose
worker went silent, and worker executions nobody claimed in time (wire §8.2).

Each takes an explicit ``now`` and returns how many executions it changed; the
``execution_sweeps`` job runs them every few seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.extensions import db
from app.scheduling.delivery import escalate_failure
from app.scheduling.models import Cue, Execution, Worker


def recover_stale_deliveries(now: datetime) -> int:
    """Webhook executions stuck in ``delivering`` (a crashed worker) → retrying | failed.

    Only webhook transport: worker claims are governed by their lease (wire §16 #9).
    """
    cutoff = now - timedelta(seconds=current_app.config["EXECUTION_STALE_AFTER_SECONDS"])
    rows = db.session.execute(
        select(Execution.id, Execution.attempts, Execution.last_attempt_at, Cue.id,
               Cue.retry_max_attempts)
        .join(Cue, Cue.id == Execution.cue_id)
        .where(Cue.transport == "webhook", Execution.status == "delivering",
               Execution.updated_at < cutoff)).all()
    failed = []
    for execution_id, attempts, claimed_at, cue_id, max_attempts in rows:
        final = attempts >= max_attempts
        values = ({"status": "failed", "next_retry_at": None} if final else
                  {"status": "retrying", "next_retry_at": now})
        result = db.session.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == "delivering",
                   Execution.last_attempt_at == claimed_at)
            .values(error_message="Delivery interrupted (worker stopped mid-delivery)",
                    updated_at=now, **values)
            .execution_options(synchronize_session=False))
        if result.rowcount and final:
            failed.append((cue_id, attempts))
    db.session.commit()
    for cue_id, attempts in failed:
        _fail_once_cue(cue_id, now)
        escalate_failure(cue_id, attempts, None, "Delivery interrupted", now)
    return len(rows)


def _fail_once_cue(cue_id: str, now: datetime) -> None:
    from app.scheduling.services.executions import finish_once_cue

    cue = db.session.get(Cue, cue_id)
    if cue is not None and cue.schedule_type == "once" and cue.next_run is None:
        finish_once_cue(cue_id, False, now)
    db.session.commit()


def mark_missed(now: datetime) -> int:
    """Due worker executions nobody claimed in time → ``missed`` (+ escalation).

    Unclaimed time counts from ``scheduled_for`` (a future ``send_at`` is not held against the
    worker, §16 #10) or from the moment a stale claim was released, whichever is later.
    """
    cutoff = now - timedelta(seconds=current_app.config["WORKER_UNCLAIMED_TIMEOUT_SECONDS"])
    rows = db.session.execute(
        select(Execution.id, Cue.id, Execution.attempts).join(Cue, Cue.id == Execution.cue_id)
        .where(Cue.transport == "worker", Execution.status == "pending",
               Execution.scheduled_for < cutoff, Execution.updated_at < cutoff)).all()
    missed = []
    for execution_id, cue_id, attempts in rows:
        result = db.session.execute(
            update(Execution).where(Execution.id == execution_id, Execution.status == "pending")
            .values(status="missed", updated_at=now,
                    error_message="No worker claimed this execution in time")
            .execution_options(synchronize_session=False))
        if result.rowcount:
            missed.append((cue_id, attempts))
    db.session.commit()
    for cue_id, attempts in missed:
        _fail_once_cue(cue_id, now)
        escalate_failure(cue_id, attempts, None, "No worker claimed this execution in time", now)
    return len(missed)


def recover_abandoned_claims(now: datetime) -> int:
    """Worker claims whose lease expired while their worker went silent → back to ``pending``.

    The lease runs from the claim or the last execution heartbeat.  A claim is abandoned only
    when, in addition, the claiming worker's ``/v1/worker/heartbeat`` is older than
    ``WORKER_HEARTBEAT_TIMEOUT_SECONDS`` (or the worker row was deleted).  An execution that
    has used all its ``retry.max_attempts`` fails instead (+ escalation).
    """
    config = current_app.config
    lease_cutoff = now - timedelta(seconds=config["WORKER_CLAIM_TIMEOUT_SECONDS"])
    alive_cutoff = now - timedelta(seconds=config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])
    live_worker = (select(Worker.id)
                   .where(Worker.user_id == Cue.user_id,
                          Worker.worker_id == Execution.claimed_by_worker,
                          Worker.last_heartbeat >= alive_cutoff).exists())
    rows = db.session.execute(
        select(Execution.id, Execution.attempts, Execution.last_attempt_at, Cue.id,
               Cue.retry_max_attempts)
        .join(Cue, Cue.id == Execution.cue_id)
        .where(Cue.transport == "worker", Execution.status == "delivering",
               Execution.claimed_at < lease_cutoff,
               or_(Execution.last_heartbeat_at.is_(None),
                   Execution.last_heartbeat_at < lease_cutoff),
               ~live_worker)).all()
    failed = []
    for execution_id, attempts, claimed_at, cue_id, max_attempts in rows:
        final = attempts >= max_attempts
        values = ({"status": "failed", "error_message": "Worker stopped responding; "
                   "retry attempts exhausted"} if final else
                  {"status": "pending", "claimed_by_worker": None, "claimed_at": None,
                   "last_heartbeat_at": None})
        result = db.session.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == "delivering",
                   Execution.last_attempt_at == claimed_at)
            .values(updated_at=now, **values).execution_options(synchronize_session=False))
        if result.rowcount and final:
            failed.append((cue_id, attempts))
    db.session.commit()
    for cue_id, attempts in failed:
        _fail_once_cue(cue_id, now)
        escalate_failure(cue_id, attempts, None, "Worker stopped responding", now)
    return len(rows)


def sweep_at(now: datetime) -> int:
    """All sweeps at ``now``; return how many executions changed."""
    return recover_stale_deliveries(now) + recover_abandoned_claims(now) + mark_missed(now)
