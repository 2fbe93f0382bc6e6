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
from collections import deque
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name, utcnow
from app.errors import AppError
from app.extensions import db
from app.scheduling import schedule as sched
from app.scheduling import sweeps
from app.scheduling.delivery import (
    Attempt,
    escalate_failure,
    prepare_attempts,
    record_attempts,
    send_attempt,
)
from app.scheduling.models import Cue, Execution
from app.users.models import User

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Scheduler


def _insert_slots(pairs: list[tuple[str, datetime]], now: datetime) -> set[tuple[str, datetime]]:
    """Insert scheduler executions for ``(cue_id, slot)`` pairs in one statement.

    ``ON CONFLICT (cue_id, scheduled_for) DO NOTHING`` makes it idempotent; the pairs actually
    inserted are returned, so ``fired_count`` counts only those.
    """
    if not pairs:
        return set()
    import uuid

    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    stmt = (dialect.insert(Execution)
            .values([{"id": uuid.uuid4(), "cue_id": cue_id, "scheduled_for": when,
                      "status": "pending", "triggered_by": "scheduler", "attempts": 0,
                      "created_at": now, "updated_at": now} for cue_id, when in pairs])
            .on_conflict_do_nothing(index_elements=["cue_id", "scheduled_for"])
            .returning(Execution.cue_id, Execution.scheduled_for))
    return {(cue_id, when) for cue_id, when in db.session.execute(stmt)}


#: Cues turned into executions per transaction: small enough that the first executions are
#: visible (and being delivered) quickly when thousands fall due at once; the job runs again
#: immediately while work remains, up to ``POLLER_BATCH_SIZE`` cues per cycle.
SCHEDULER_CHUNK = 100


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
    created = 0
    while batch > 0:
        chunk = min(batch, SCHEDULER_CHUNK)
        fired, seen = _schedule_chunk(now, chunk, cap)
        created += fired
        batch -= chunk
        if seen < chunk:
            break
    return created


def _schedule_chunk(now: datetime, limit: int, cap: int) -> tuple[int, int]:
    """Fire up to ``limit`` due cues in one transaction; return (executions created, cues seen)."""
    query = (select(Cue).where(Cue.status == "active", Cue.next_run.is_not(None),
                               Cue.next_run <= now,
                               # Deactivated owners' cues wait; on reactivation the catch-up
                               # policy below decides how many overdue slots still fire.
                               Cue.user_id.in_(select(User.id).where(User.active)))
             .order_by(Cue.next_run).limit(limit))
    if dialect_name() == "postgresql":
        query = query.with_for_update(skip_locked=True)
    cues = db.session.scalars(query).all()
    # Many cues share a schedule ("every minute", "hourly"): evaluate each one once per pass.
    evaluated: dict[tuple, tuple[list[datetime], datetime | None]] = {}
    planned: list[tuple[Cue, list[datetime], datetime | None]] = []
    for cue in cues:
        if cue.schedule_type == "once":
            planned.append((cue, [cue.next_run], None))
            continue
        key = (cue.schedule_cron, cue.schedule_timezone, cue.next_run)
        if key not in evaluated:
            try:
                slots = sched.latest_cron_times(cue.schedule_cron, cue.schedule_timezone,
                                                cue.next_run, now, cap) or [cue.next_run]
                evaluated[key] = (slots, sched.next_cron_time(cue.schedule_cron,
                                                              cue.schedule_timezone, now))
            except AppError as exc:
                # One unusable schedule (e.g. a time zone removed from the system database)
                # must not stall every other cue: stop scheduling this one and say why.
                log.warning("cue %s: schedule cannot be evaluated (%s); next_run cleared",
                            cue.id, exc.message)
                cue.next_run = None
                cue.updated_at = now
                continue
        slots, next_run = evaluated[key]
        planned.append((cue, slots, next_run))
    inserted = _insert_slots([(cue.id, slot) for cue, slots, _ in planned for slot in slots], now)
    created = 0
    for cue, slots, next_run in planned:
        fired = sum((cue.id, slot) in inserted for slot in slots)
        if fired < len(slots) or slots[0] > cue.next_run:
            log.info("cue %s: fired %d slot(s), skipped older overdue slots since %s",
                     cue.id, fired, cue.next_run.isoformat())
        cue.fired_count = (cue.fired_count or 0) + fired
        cue.next_run = next_run
        cue.updated_at = now
        created += fired
    db.session.commit()
    return created, len(cues)


def run_scheduler(ctx) -> int:
    """Job: one scheduler pass."""
    if ctx.stopping.is_set():
        return 0
    return schedule_due_cues(ctx.now())


# ---------------------------------------------------------------------------------------------
# Webhook dispatch


def claim_webhook_executions(now: datetime, limit: int, promote_retries: bool = True
                             ) -> list[tuple[object, datetime]]:
    """Claim up to ``limit`` due webhook executions; return ``(id, claim time)`` pairs.

    ``retrying`` rows whose ``next_retry_at`` passed become ``retry_ready`` first.  Candidates
    are picked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and moved to ``delivering`` by one
    conditional update, so no two dispatchers deliver one attempt.  Oldest first.
    """
    if limit <= 0:
        return []
    if promote_retries:
        db.session.execute(update(Execution)
                           .where(Execution.status == "retrying", Execution.next_retry_at <= now)
                           .values(status="retry_ready", updated_at=now)
                           .execution_options(synchronize_session=False))
    picked = (select(Execution.id).join(Cue, Cue.id == Execution.cue_id)
              .where(Cue.transport == "webhook",
                     or_(and_(Execution.status == "pending", Execution.scheduled_for <= now),
                         Execution.status == "retry_ready"))
              .order_by(Execution.scheduled_for).limit(limit))
    if dialect_name() == "postgresql":
        picked = picked.with_for_update(of=Execution, skip_locked=True)
    rows = db.session.execute(
        update(Execution)
        .where(Execution.id.in_(picked), Execution.status.in_(("pending", "retry_ready")))
        .values(status="delivering", attempts=Execution.attempts + 1, last_attempt_at=now,
                started_at=func.coalesce(Execution.started_at, now), updated_at=now)
        .returning(Execution.id, Execution.scheduled_for)
        .execution_options(synchronize_session=False)).all()
    db.session.commit()
    return [(execution_id, now) for execution_id, _ in sorted(rows, key=lambda row: row[1])]


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


def _send_tracked(ctx, attempt: Attempt) -> None:
    """Delivery thread: send one prepared attempt; the dispatcher records the result."""
    try:
        result = send_attempt(attempt)
    except Exception:
        # Left ``delivering``: the stale-delivery sweep recovers it.
        ctx.state["webhooks_in_flight"].discard((attempt.execution_id, attempt.claimed_at))
        raise
    ctx.state["webhook_results"].append((attempt, result, ctx.now()))


def record_webhook_results(ctx) -> int:
    """Write the results the delivery threads finished since the last call; return how many.

    One transaction for the whole batch; should it fail (e.g. a deadlock), each result is
    retried alone, and one that still cannot be written stays ``delivering`` until the
    stale-delivery sweep recovers it.
    """
    results = ctx.state.setdefault("webhook_results", deque())
    batch = []
    while results:
        batch.append(results.popleft())
    if not batch:
        return 0
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())

    def escalate(*args):
        ctx.submit(escalate_failure, *args)

    try:
        try:
            record_attempts(batch, escalate=escalate)
        except Exception:
            db.session.rollback()
            log.warning("recording %d webhook results together failed; one by one",
                        len(batch), exc_info=True)
            for item in batch:
                try:
                    record_attempts([item], escalate=escalate)
                except Exception:
                    db.session.rollback()
                    log.exception("execution %s: result not recorded", item[0].execution_id)
    finally:
        for attempt, _result, _finished in batch:
            in_flight.discard((attempt.execution_id, attempt.claimed_at))
    return len(batch)


def _release_on_shutdown(ctx) -> None:
    """Record the finished deliveries, then put the ones still in flight back in the queue."""
    record_webhook_results(ctx)
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())
    release_webhook_claims(list(in_flight), utcnow())


def dispatch_webhooks(ctx) -> int:
    """Job: record finished deliveries, then claim as many due webhook executions as there are
    free delivery threads, read them in one query and hand each send to a delivery thread."""
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())
    ctx.state.setdefault("webhook_results", deque())
    if not ctx.state.get("webhooks_release_registered"):
        ctx.on_shutdown(lambda: _release_on_shutdown(ctx))
        ctx.state["webhooks_release_registered"] = True
    recorded = record_webhook_results(ctx)
    slots = min(ctx.free_slots(), current_app.config["POLLER_BATCH_SIZE"])
    now = ctx.now()
    # Due retries are promoted at most once per poll interval, not on every claim (a busy
    # dispatcher claims each time a delivery thread frees up).
    promote = now >= ctx.state.get("retries_promoted_until", now)
    if promote:
        ctx.state["retries_promoted_until"] = now + timedelta(
            seconds=current_app.config["POLLER_INTERVAL_SECONDS"])
    claims = claim_webhook_executions(now, slots, promote_retries=promote)
    in_flight.update(claims)
    try:
        attempts, _outcomes = prepare_attempts(claims, now)
    except Exception:
        db.session.rollback()
        in_flight.difference_update(claims)  # still claimed: the stale sweep recovers them
        raise
    sending = {(attempt.execution_id, attempt.claimed_at) for attempt in attempts}
    in_flight.difference_update(set(claims) - sending)
    for attempt in attempts:
        ctx.submit(_send_tracked, ctx, attempt)
    if in_flight:
        # Run again as soon as a delivery finishes, to record it (and claim the next).
        ctx.saturated = True
    return len(claims) + recorded


# ---------------------------------------------------------------------------------------------
# Sweeps


def sweep_executions(ctx) -> int:
    """Job: the sweeps (they run every few seconds; their work is never urgent)."""
    if ctx.stopping.is_set():
        return 0
    sweeps.sweep_at(ctx.now())
    return 0
