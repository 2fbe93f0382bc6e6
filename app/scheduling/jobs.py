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
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name, utcnow
from app.errors import AppError
from app.extensions import db
from app.scheduling import schedule as sched
from app.scheduling import sweeps
from app.scheduling.delivery import (
    ATTEMPT_COLUMNS,
    Attempt,
    escalate_failure,
    prepare_attempts,
    prepare_rows,
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
    table = Execution.__table__
    # A Core statement with a parameter list: compiled once and cached, sent as multi-row
    # INSERTs ("insertmanyvalues"); building one VALUES clause per chunk cost more than the
    # database did.
    stmt = (dialect.insert(table)
            .on_conflict_do_nothing(index_elements=["cue_id", "scheduled_for"])
            .returning(table.c.cue_id, table.c.scheduled_for))
    rows = db.session.execute(stmt, [
        {"id": uuid.uuid4(), "cue_id": cue_id, "scheduled_for": when, "status": "pending",
         "triggered_by": "scheduler", "attempts": 0, "created_at": now, "updated_at": now}
        for cue_id, when in pairs])
    return {(cue_id, when) for cue_id, when in rows}


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
    return _schedule_pass(now or utcnow(), batch)[0]


def _schedule_pass(now: datetime, batch: int | None = None
                   ) -> tuple[int, bool, datetime | None]:
    """:func:`schedule_due_cues`; also say whether due cues may remain (the batch ran out) and,
    if none remain, when the next active cue falls due (``None``: none has a ``next_run``)."""
    config = current_app.config
    batch = batch or config["POLLER_BATCH_SIZE"]
    cap = config["POLLER_MAX_CATCH_UP_SLOTS"]
    created = 0
    while batch > 0:
        chunk = min(batch, SCHEDULER_CHUNK)
        fired, seen, upcoming = _schedule_chunk(now, chunk, cap)
        created += fired
        batch -= chunk
        if seen < chunk:
            return created, False, upcoming
    return created, True, None


#: Advances the fired cues of a chunk on PostgreSQL in one statement (they are locked already).
_ADVANCE_CUES_PG = text("""
UPDATE cues SET fired_count = COALESCE(cues.fired_count, 0) + v.fired, next_run = v.next_run,
    updated_at = :now
FROM unnest(CAST(:ids AS text[]), CAST(:fired AS integer[]), CAST(:next_runs AS timestamptz[]))
     AS v(id, fired, next_run)
WHERE cues.id = v.id
""")


def _advance_cues(advanced: list[tuple[str, int, datetime | None]], now: datetime) -> None:
    """``fired_count += fired`` and the new ``next_run`` of each ``(cue id, fired, next_run)``."""
    if not advanced:
        return
    if dialect_name() == "postgresql":
        db.session.execute(_ADVANCE_CUES_PG, {
            "ids": [cue_id for cue_id, _, _ in advanced],
            "fired": [fired for _, fired, _ in advanced],
            "next_runs": [next_run for _, _, next_run in advanced], "now": now})
        return
    table = Cue.__table__
    db.session.execute(
        table.update().where(table.c.id == bindparam("b_id"))
        .values(fired_count=func.coalesce(table.c.fired_count, 0) + bindparam("b_fired"),
                next_run=bindparam("b_next"), updated_at=now),
        [{"b_id": cue_id, "b_fired": fired, "b_next": next_run}
         for cue_id, fired, next_run in advanced])


def _schedule_chunk(now: datetime, limit: int, cap: int) -> tuple[int, int, datetime | None]:
    """Fire up to ``limit`` due cues in one transaction; return (executions created, cues seen,
    the next ``next_run`` after ``now`` when fewer than ``limit`` were due, else ``None``).

    Three statements whatever the chunk size: read the due cues (columns, not objects), insert
    their executions, advance the cues; and in the last chunk of a pass, in the same
    transaction, the next due time (the worker sleeps until then).
    """
    c, u = Cue.__table__.c, User.__table__.c  # Core statements: no ORM layer in the hot path
    query = (select(c.id, c.schedule_type, c.schedule_cron, c.schedule_timezone, c.next_run)
             .where(c.status == "active", c.next_run.is_not(None), c.next_run <= now,
                    # Deactivated owners' cues wait; on reactivation the catch-up
                    # policy below decides how many overdue slots still fire.
                    c.user_id.in_(select(u.id).where(u.active)))
             .order_by(c.next_run).limit(limit))
    if dialect_name() == "postgresql":
        query = query.with_for_update(skip_locked=True)
    cues = db.session.execute(query).all()
    # Many cues share a schedule ("every minute", "hourly"): evaluate each one once per pass.
    evaluated: dict[tuple, tuple[list[datetime], datetime | None]] = {}
    planned: list[tuple[str, datetime, list[datetime], datetime | None]] = []
    advanced: list[tuple[str, int, datetime | None]] = []
    for cue_id, schedule_type, cron, timezone, due in cues:
        if schedule_type == "once":
            planned.append((cue_id, due, [due], None))
            continue
        key = (cron, timezone, due)
        if key not in evaluated:
            try:
                slots = sched.latest_cron_times(cron, timezone, due, now, cap) or [due]
                evaluated[key] = (slots, sched.next_cron_time(cron, timezone, now))
            except AppError as exc:
                # One unusable schedule (e.g. a time zone removed from the system database)
                # must not stall every other cue: stop scheduling this one and say why.
                log.warning("cue %s: schedule cannot be evaluated (%s); next_run cleared",
                            cue_id, exc.message)
                advanced.append((cue_id, 0, None))
                continue
        slots, next_run = evaluated[key]
        planned.append((cue_id, due, slots, next_run))
    inserted = _insert_slots([(cue_id, slot) for cue_id, _, slots, _ in planned
                              for slot in slots], now)
    created = 0
    for cue_id, due, slots, next_run in planned:
        fired = sum((cue_id, slot) in inserted for slot in slots)
        if fired < len(slots) or slots[0] > due:
            log.info("cue %s: fired %d slot(s), skipped older overdue slots since %s",
                     cue_id, fired, due.isoformat())
        advanced.append((cue_id, fired, next_run))
        created += fired
    _advance_cues(advanced, now)
    upcoming = None
    if len(cues) < limit:
        upcoming = db.session.scalar(select(func.min(c.next_run))
                                     .where(c.status == "active", c.next_run > now))
    db.session.commit()
    from app.metrics import observe_lateness

    observe_lateness((now - slot).total_seconds() for _, slot in inserted)
    return created, len(cues), upcoming


#: While deliveries are in flight, the dispatcher records results and claims in batches of at
#: least ``DELIVERY_CONCURRENCY / DISPATCH_BATCH_DIVISOR`` (each round costs the same few
#: statements however many rows it carries).
DISPATCH_BATCH_DIVISOR = 2
#: Attempts claimed beyond the free delivery threads, in pool sizes: they wait in the pool's
#: queue, so each round carries a larger batch (the threads never idle between rounds).  A
#: worker thus holds up to ``2 × DELIVERY_CONCURRENCY`` claimed executions.
DISPATCH_QUEUE_AHEAD = 1

#: While this process's scheduler still has due cues to fire, its dispatcher claims no new
#: deliveries for up to this long: creating executions is cheap and is what keeps a schedule
#: on time; delivering them competes for the same CPU.
FIRING_PRIORITY_SECONDS = 1.0

#: While cues keep falling due, a worker's scheduler passes start at most this often: a cue due
#: alone fires at its instant, but when cues fall due milliseconds apart (10,000 spread over a
#: minute) waking for each would cost a pass (a transaction of four statements) per cue in
#: every worker, and saturate the machine long before it runs out of delivery capacity.  It adds
#: at most this much lateness to a cue.
SCHEDULER_PACE_SECONDS = 0.1


def run_scheduler(ctx) -> int:
    """Job: one scheduler pass.

    After a pass that fired everything due (the backlog did not run out the batch), it asks to
    run again when the next cue falls due, if that comes before the poll interval ends, so a cue
    fires on time rather than up to a poll interval late — but, after a pass that fired cues or
    was itself woken for a due cue, no sooner than ``SCHEDULER_PACE_SECONDS`` after that pass
    began.  A pass that created executions wakes the webhook dispatcher.
    """
    if ctx.stopping.is_set():
        return 0
    started = time.monotonic()
    now = ctx.now()
    woken_for_due = ctx.state.pop("scheduler_woken_for_due", False)
    created, more, upcoming = _schedule_pass(now)
    if created:
        ctx.state["webhooks_created"] = True  # the dispatcher claims again (see there)
        ctx.wake("webhook_delivery")
    if more:
        ctx.state.setdefault("firing_backlog_since", time.monotonic())
        return created  # run again at once
    ctx.state.pop("firing_backlog_since", None)
    if upcoming is not None:
        wait = (upcoming - now).total_seconds()
        if created or woken_for_due:
            wait = max(wait, SCHEDULER_PACE_SECONDS - (time.monotonic() - started))
        if wait <= current_app.config["POLLER_INTERVAL_SECONDS"]:
            ctx.state["scheduler_woken_for_due"] = True
        ctx.run_again_in(wait)
    elif created:
        ctx.run_again_in(SCHEDULER_PACE_SECONDS)
    return created


# ---------------------------------------------------------------------------------------------
# Webhook dispatch


def claim_webhook_executions(now: datetime, limit: int, promote_retries: bool = True
                             ) -> list[tuple[object, datetime]]:
    """Claim up to ``limit`` due webhook executions; return ``(id, claim time)`` pairs.

    ``retrying`` rows whose ``next_retry_at`` passed become ``retry_ready`` first.  Candidates
    are picked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and moved to ``delivering`` by one
    conditional update, so no two dispatchers deliver one attempt.  Due retries first, then
    pending executions; oldest first.
    """
    if limit <= 0:
        return []
    claimed = _claim(now, limit, promote_retries)
    db.session.commit()
    return claimed


def _promote_retries(now: datetime) -> None:
    """``retrying`` executions whose ``next_retry_at`` passed become ``retry_ready``."""
    e = Execution.__table__.c
    db.session.execute(Execution.__table__.update()
                       .where(e.status == "retrying", e.next_retry_at <= now)
                       .values(status="retry_ready", updated_at=now))


def _claim(now: datetime, limit: int, promote_retries: bool) -> list[tuple[object, datetime]]:
    """:func:`claim_webhook_executions` without the commit.

    Due retries first, then pending executions, oldest first: two index-ordered picks (one
    ``OR`` of both would read, join and sort every queued execution on each claim), each
    claimed with one update.  ``retry_ready`` rows are looked for only along with the
    promotion of due retries (``promote_retries``), which the dispatcher does once per poll
    interval: they have waited out a backoff, and looking on every claim costs a statement.
    """
    if promote_retries:
        _promote_retries(now)
    claimed: list[tuple[object, datetime]] = []
    executions, e, c = Execution.__table__, Execution.__table__.c, Cue.__table__.c  # Core
    picks = [("pending", e.scheduled_for <= now)]
    if promote_retries:
        picks.insert(0, ("retry_ready", None))
    for status, due in picks:
        wanted = limit - len(claimed)
        if wanted <= 0:
            break
        picked = (select(e.id).select_from(executions.join(Cue.__table__, c.id == e.cue_id))
                  .where(c.transport == "webhook", e.status == status,
                         *([due] if due is not None else []))
                  .order_by(e.scheduled_for).limit(wanted))
        if dialect_name() == "postgresql":
            picked = picked.with_for_update(of=executions, skip_locked=True)
        # Picked first, then updated by id: as one ``UPDATE … WHERE id IN (SELECT … LIMIT)``
        # the planner may re-run the locking subquery for every queued row.
        ids = db.session.execute(picked).scalars().all()
        if not ids:
            continue
        rows = db.session.execute(
            executions.update()
            .where(e.id.in_(ids), e.status == status)
            .values(status="delivering", attempts=e.attempts + 1, last_attempt_at=now,
                    started_at=func.coalesce(e.started_at, now), updated_at=now)
            .returning(e.id, e.scheduled_for)).all()
        claimed.extend((execution_id, now)
                       for execution_id, _ in sorted(rows, key=lambda row: row[1]))
    return claimed


#: PostgreSQL: pick (``SKIP LOCKED``), claim and read due executions in one statement.  The
#: picked ids are materialised first, so the locking subquery runs once.
_CLAIM_PG = text("""
WITH picked AS MATERIALIZED (
    SELECT e.id FROM executions AS e JOIN cues AS c ON c.id = e.cue_id
    WHERE c.transport = 'webhook' AND e.status = :status AND e.scheduled_for <= :due
    ORDER BY e.scheduled_for LIMIT :limit
    FOR UPDATE OF e SKIP LOCKED)
UPDATE executions AS x
SET status = 'delivering', attempts = x.attempts + 1, last_attempt_at = :now,
    started_at = COALESCE(x.started_at, :now), updated_at = :now
FROM picked, cues AS c, users AS u
WHERE x.id = picked.id AND x.status = :status AND c.id = x.cue_id AND u.id = c.user_id
RETURNING x.id, x.status, x.last_attempt_at, x.attempts, x.triggered_by, x.scheduled_for,
          x.payload_override, x.payload_merge_strategy,
          c.id, c.name, c.payload, c.callback_headers, c.callback_method, c.callback_url,
          c.schedule_type, c.next_run, c.retry_max_attempts, c.retry_backoff_minutes,
          u.id, u.webhook_secret
""").columns(*ATTEMPT_COLUMNS)
_NO_LIMIT = datetime.max.replace(tzinfo=UTC)


def _claim_and_prepare(now: datetime, limit: int, promote_retries: bool
                       ) -> tuple[list[tuple[object, datetime]], list[Attempt]]:
    """Claim due webhook executions and prepare their attempts; commits.

    The same claims as :func:`claim_webhook_executions`; on PostgreSQL each pick, claim and
    read is one statement.
    """
    if dialect_name() != "postgresql":
        claims = _claim(now, limit, promote_retries)
        return claims, prepare_attempts(claims, now)[0]
    if promote_retries:
        _promote_retries(now)
    rows = []
    for status, due in ((("retry_ready", _NO_LIMIT),) if promote_retries else ()) + (
            ("pending", now),):
        wanted = limit - len(rows)
        if wanted <= 0:
            break
        rows.extend(db.session.execute(_CLAIM_PG, {"status": status, "due": due,
                                                   "limit": wanted, "now": now}).all())
    rows.sort(key=lambda row: row[5])  # scheduled_for: oldest first
    claims = [(row[0], now) for row in rows]
    return claims, prepare_rows(rows, dict(claims), now)[0]


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
        if ctx.stopping.is_set():  # shutting down: the pool may not get to run it
            escalate_failure(*args)
        else:  # it may send a request: not in the worker's main loop
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
    in_flight.clear()


def dispatch_webhooks(ctx) -> int:
    """Job: record finished deliveries, then claim due webhook executions for the free delivery
    threads, read them in one query and hand each send to a delivery thread.

    While deliveries are in flight it records and claims in batches (``DISPATCH_BATCH_DIVISOR``,
    ``DISPATCH_QUEUE_AHEAD``), and it runs again as soon as enough deliveries finished.
    """
    in_flight = ctx.state.setdefault("webhooks_in_flight", set())
    results = ctx.state.setdefault("webhook_results", deque())
    if not ctx.state.get("webhooks_release_registered"):
        ctx.on_shutdown(lambda: _release_on_shutdown(ctx))
        ctx.state["webhooks_release_registered"] = True
    pool = ctx.pool
    batch = max(1, pool.size // DISPATCH_BATCH_DIVISOR)
    pool.wake_threshold, pool.queue_ahead = batch, pool.size * DISPATCH_QUEUE_AHEAD
    if len(in_flight) > len(results) and len(results) < batch and pool.room() < batch:
        # Deliveries are still being sent and too few finished to be worth a round of
        # statements: wait for more (the pool wakes the worker when its room reaches a
        # batch, or when it went idle).
        ctx.saturated = True
        return 0
    recorded = record_webhook_results(ctx)
    backlog_since = ctx.state.get("firing_backlog_since")
    if backlog_since is not None and time.monotonic() - backlog_since < FIRING_PRIORITY_SECONDS:
        if in_flight:
            ctx.saturated = True
        return recorded  # the scheduler runs again at once; claim after it caught up
    slots = 0 if ctx.stopping.is_set() else pool.room()
    slots = min(slots, current_app.config["POLLER_BATCH_SIZE"])
    if slots < batch and (in_flight or pool.free_slots() == 0):
        ctx.saturated = True
        return recorded
    drained_at = ctx.state.get("webhooks_drained_at")
    if (not ctx.state.pop("webhooks_created", False) and drained_at is not None
            and time.monotonic() - drained_at < current_app.config["POLLER_INTERVAL_SECONDS"]):
        # The last claim emptied the queue and this process's scheduler created nothing since:
        # recording results is no reason to claim again before the poll interval ends (work
        # from elsewhere waits no longer than for an idle dispatcher).
        if in_flight:
            ctx.saturated = True
        return recorded
    now = ctx.now()
    # Due retries are promoted at most once per poll interval, not on every claim (a busy
    # dispatcher claims each time a delivery thread frees up).
    promote = now >= ctx.state.get("retries_promoted_until", now)
    if promote:
        ctx.state["retries_promoted_until"] = now + timedelta(
            seconds=current_app.config["POLLER_INTERVAL_SECONDS"])
    try:
        claims, attempts = _claim_and_prepare(now, slots, promote) if slots > 0 else ([], [])
    except Exception:
        db.session.rollback()  # nothing was claimed
        raise
    if slots > 0 and len(claims) < slots:
        ctx.state["webhooks_drained_at"] = time.monotonic()
    else:
        ctx.state.pop("webhooks_drained_at", None)
    in_flight.update(claims)
    sending = {(attempt.execution_id, attempt.claimed_at) for attempt in attempts}
    in_flight.difference_update(set(claims) - sending)
    for attempt in attempts:
        ctx.submit(_send_tracked, ctx, attempt)
    if in_flight:
        # Run again when the pool wakes the worker — a batch's worth of room, every delivery
        # finished — to record the results (and claim the next), or sooner when this
        # process's scheduler creates executions (``ctx.wake``).
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


def prune_fire_keys(ctx) -> int:
    """Job: delete fire idempotency keys whose 24-hour window passed (they are free anyway:
    a fire reusing one frees it itself; this keeps the table small)."""
    if ctx.stopping.is_set():
        return 0
    from app.scheduling.services.fire_options import prune_keys

    prune_keys(ctx.now())
    return 0  # one statement deletes them all: nothing left to run again for
