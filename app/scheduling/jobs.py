"""Background jobs of the scheduling primitive (registered in ``app.worker.JOBS``).

* :func:`run_scheduler` — turns due active cues into executions.
* :func:`dispatch_webhooks` — claims due webhook executions and delivers them in the pool.
* :func:`sweep_executions` — stale webhook deliveries, unclaimed and abandoned worker claims.

Each job has a ``*_at(now)`` twin doing one pass at an explicit time, which tests call directly.

Catch-up policy: when the scheduler finds a recurring cue behind (``next_run`` far in the past
because no worker ran), it fires at most ``POLLER_MAX_CATCH_UP_SLOTS`` of the overdue slots —
the most recent ones — skips the rest, and moves ``next_run`` to the first slot after now.
Upstream replays every missed slot one by one, which after a long outage floods receivers with
stale work; a backlog cap with "latest wins" is what most periodic jobs want.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name, utcnow
from app.errors import AppError
from app.extensions import db
from app.scheduling import schedule as sched
from app.scheduling.delivery import deliver_webhook, escalate_failure
from app.scheduling.models import Cue, Execution, Worker
from app.users.models import User

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Scheduler


def _insert_slot(cue_id: str, when: datetime, now: datetime) -> bool:
    """Insert a scheduler execution unless that (cue, slot) exists; True if inserted."""
    import uuid

    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    stmt = (dialect.insert(Execution)
            .values(id=uuid.uuid4(), cue_id=cue_id, scheduled_for=when, status="pending",
                    triggered_by="scheduler", attempts=0, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["cue_id", "scheduled_for"])
            .returning(Execution.id))
    return db.session.execute(stmt).first() is not None


def schedule_due_cues(now: datetime | None = None, batch: int | None = None) -> int:
    """One scheduler pass at ``now``; return the number of executions created.

    Due cues are locked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers
    share the cues instead of serialising on them; the unique key on ``(cue_id,
    scheduled_for)`` makes firing idempotent even if two passes overlap (SQLite, or a
    cue edited in between), and ``fired_count`` only counts rows actually inserted.
    """
    now = now or utcnow()
    config = current_app.config
    batch = batch or config["POLLER_BATCH_SIZE"]
    cap = config["POLLER_MAX_CATCH_UP_SLOTS"]
    query = (select(Cue).where(Cue.status == "active", Cue.next_run.is_not(None),
                               Cue.next_run <= now,
                               # Deactivated owners' cues wait; on reactivation the catch-up
                               # policy below decides how many overdue slots still fire.
                               Cue.user_id.in_(select(User.id).where(User.active)))
             .order_by(Cue.next_run).limit(batch))
    if dialect_name() == "postgresql":
        query = query.with_for_update(skip_locked=True)
    created = 0
    for cue in db.session.scalars(query).all():
        if cue.schedule_type == "once":
            slots, next_run = [cue.next_run], None
        else:
            try:
                slots = sched.latest_cron_times(cue.schedule_cron, cue.schedule_timezone,
                                                cue.next_run, now, cap) or [cue.next_run]
                next_run = sched.next_cron_time(cue.schedule_cron, cue.schedule_timezone, now)
            except AppError as exc:
                # One unusable schedule (e.g. a time zone removed from the system database)
                # must not stall every other cue: stop scheduling this one and say why.
                log.warning("cue %s: schedule cannot be evaluated (%s); next_run cleared",
                            cue.id, exc.message)
                cue.next_run = None
                cue.updated_at = now
                continue
        inserted = sum(_insert_slot(cue.id, slot, now) for slot in slots)
        if inserted < len(slots) or slots[0] > cue.next_run:
            log.info("cue %s: fired %d slot(s), skipped older overdue slots since %s",
                     cue.id, inserted, cue.next_run.isoformat())
        cue.fired_count = (cue.fired_count or 0) + inserted
        cue.next_run = next_run
        cue.updated_at = now
        created += inserted
    db.session.commit()
    return created


def run_scheduler(ctx) -> int:
    """Job: one scheduler pass."""
    if ctx.stopping.is_set():
        return 0
    return schedule_due_cues(ctx.now())


# ---------------------------------------------------------------------------------------------
# Webhook dispatch


def claim_webhook_executions(now: datetime, limit: int) -> list[tuple[object, datetime]]:
    """Claim up to ``limit`` due webhook executions; return ``(id, claim time)`` pairs.

    ``retrying`` rows whose ``next_retry_at`` passed become ``retry_ready`` first.  Candidates
    are picked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and moved to ``delivering`` by a
    conditional update, so no two dispatchers deliver one attempt.
    """
    if limit <= 0:
        return []
    db.session.execute(update(Execution)
                       .where(Execution.status == "retrying", Execution.next_retry_at <= now)
                       .values(status="retry_ready", updated_at=now)
                       .execution_options(synchronize_session=False))
    query = (select(Execution.id).join(Cue, Cue.id == Execution.cue_id)
             .where(Cue.transport == "webhook",
                    or_(and_(Execution.status == "pending", Execution.scheduled_for <= now),
                        Execution.status == "retry_ready"))
             .order_by(Execution.scheduled_for).limit(limit))
    if dialect_name() == "postgresql":
        query = query.with_for_update(of=Execution, skip_locked=True)
    claimed = []
    for execution_id in db.session.scalars(query).all():
        result = db.session.execute(
            update(Execution)
            .where(Execution.id == execution_id,
                   Execution.status.in_(("pending", "retry_ready")))
            .values(status="delivering", attempts=Execution.attempts + 1, last_attempt_at=now,
                    started_at=now, updated_at=now)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            claimed.append((execution_id, now))
    db.session.commit()
    return claimed


def release_webhook_claims(claims: list[tuple[object, datetime]], now: datetime) -> int:
    """Put interrupted deliveries back in the queue (attempt not counted); return how many."""
    released = 0
    for execution_id, claimed_at in claims:
        result = db.session.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == "delivering",
                   Execution.last_attempt_at == claimed_at)
            .values(status="retry_ready", attempts=Execution.attempts - 1, updated_at=now)
            .execution_options(synchronize_session=False))
        released += result.rowcount
    db.session.commit()
    return released


def _deliver_tracked(ctx, execution_id, claimed_at) -> None:
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())
    try:
        deliver_webhook(execution_id, claimed_at, clock=ctx.now)
    finally:
        in_flight.discard((execution_id, claimed_at))


def dispatch_webhooks(ctx) -> int:
    """Job: claim as many due webhook executions as there are free delivery threads."""
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())
    ctx.on_shutdown(lambda: release_webhook_claims(list(in_flight), utcnow()))
    slots = min(ctx.free_slots(), current_app.config["POLLER_BATCH_SIZE"])
    claims = claim_webhook_executions(ctx.now(), slots)
    for claim in claims:
        in_flight.add(claim)
        ctx.submit(_deliver_tracked, ctx, *claim)
    return len(claims)


# ---------------------------------------------------------------------------------------------
# Sweeps


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


def sweep_executions(ctx) -> int:
    """Job: the sweeps (they run every few seconds; their work is never urgent)."""
    if ctx.stopping.is_set():
        return 0
    sweep_at(ctx.now())
    return 0
