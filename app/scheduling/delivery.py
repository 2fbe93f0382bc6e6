"""Webhook delivery of cue executions (wire §13.2) and final-failure escalation.

An attempt has three steps, which the worker runs in batches and :func:`deliver_webhook` runs
for one execution already claimed (``delivering``) by the dispatcher:

1. :func:`prepare_attempts` — one joined read of the claimed executions, their cues and owners;
   everything the attempt needs (signed body and headers, retry policy) is taken out of the rows
   before the read ends, so nothing is re-read after the (slow) send.
2. :func:`send_attempt` — the HTTP request (no database access).
3. :func:`record_attempts` — the results, written with one conditional update on the claims
   (``status = 'delivering'`` and each claim's ``last_attempt_at``), so a delivery interrupted
   and recovered elsewhere can never overwrite the newer attempt; then the cues' run counters
   and the owners' monthly usage counters, one statement each for the whole batch.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, text, update
from sqlalchemy.dialects import sqlite

from app.db import dialect_name, utcnow
from app.extensions import db
from app.outbound.http import SendResult, send
from app.outbound.signing import canonical_json, signature_headers
from app.quotas.cues import (
    EXECUTION_LIMIT_MESSAGE,
    execution_limit_allows,
    month_key,
    quotas_enforced,
)
from app.scheduling.models import Cue, Execution, ExecutionUsage, effective_payload
from app.users.models import User

log = logging.getLogger(__name__)

FAILURE_WEBHOOK_TIMEOUT = 10.0
RESPONSE_BODY_LIMIT = 2000
#: Headers a cue's custom headers may not set: the signature (§16 #17) and framing.
RESERVED_HEADERS = frozenset({"x-cueapi-signature", "x-cueapi-timestamp", "host",
                              "content-length", "transfer-encoding", "connection"})


def webhook_body(execution: Any, cue: Any, attempt: int) -> dict[str, Any]:
    """The JSON body receivers get (signed as canonical JSON); ``cue.payload`` is the payload
    the execution delivers (a fire's override already applied)."""
    return {"attempt": attempt, "cue_id": cue.id, "execution_id": str(execution.id),
            "name": cue.name, "payload": cue.payload if cue.payload is not None else {},
            "scheduled_for": execution.scheduled_for.isoformat()}


def webhook_headers(execution: Any, cue: Any, attempt: int, secret: str, body: str,
                    now: datetime) -> dict[str, str]:
    """Standard headers, then the cue's custom headers, then the signature (which always wins)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "CueAPI/1.0",
        "X-CueAPI-Cue-Id": cue.id,
        "X-CueAPI-Execution-Id": str(execution.id),
        "X-CueAPI-Scheduled-For": execution.scheduled_for.isoformat(),
        "X-CueAPI-Attempt": str(attempt),
    }
    for name, value in (cue.callback_headers or {}).items():
        if name.lower() in RESERVED_HEADERS:
            continue
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    headers.update(signature_headers(secret, body, now))
    return headers


def backoff_delay(cue: Any, attempt: int) -> timedelta:
    """Delay before attempt ``attempt + 1``: ``backoff_minutes[min(attempt-1, len-1)]``."""
    backoff = list(cue.retry_backoff_minutes or [1])
    return timedelta(minutes=backoff[min(attempt - 1, len(backoff) - 1)])


def _claim_matches(execution_id, claimed_at: datetime):
    return (Execution.id == execution_id, Execution.status == "delivering",
            Execution.last_attempt_at == claimed_at)


@dataclass(frozen=True)
class Attempt:
    """One prepared delivery attempt: everything needed to send it and record its result."""

    execution_id: uuid.UUID
    claimed_at: datetime
    attempt: int
    cue_id: str
    user_id: uuid.UUID
    once: bool
    max_attempts: int
    next_delay: timedelta
    method: str
    url: str
    body: str
    #: ``None`` when the owner has no signing secret (the attempt fails without a request).
    headers: dict[str, str] | None


#: What an attempt reads: execution, cue and owner columns (see :func:`prepare_rows`).
ATTEMPT_COLUMNS = (
    *(Execution.__table__.c[name] for name in (
        "id", "status", "last_attempt_at", "attempts", "triggered_by", "scheduled_for",
        "payload_override", "payload_merge_strategy")),
    *(Cue.__table__.c[name] for name in (
        "id", "name", "payload", "callback_headers", "callback_method", "callback_url",
        "schedule_type", "next_run", "retry_max_attempts", "retry_backoff_minutes")),
    User.__table__.c.id, User.__table__.c.webhook_secret,
)


class _Row:
    """Attribute access to the columns :func:`webhook_body` / :func:`webhook_headers` read."""

    __slots__ = ("id", "scheduled_for", "name", "payload", "callback_headers",
                 "retry_backoff_minutes")

    def __init__(self, **values: Any):
        for name, value in values.items():
            setattr(self, name, value)


def prepare_attempts(claims: list[tuple[Any, datetime]], now: datetime
                     ) -> tuple[list[Attempt], dict[Any, str | None]]:
    """Read the claimed executions (one query) and prepare their attempts; commits.

    Returns the attempts to send and, for claims that will not be sent, their outcome:
    ``None`` when the claim was lost meanwhile (recovered as stale, cue deleted), ``"failed"``
    when the owner's monthly execution limit stops a scheduler-created execution.
    """
    if not claims:
        return [], {}
    claimed = dict(claims)
    e, c = Execution.__table__.c, Cue.__table__.c  # Core: no ORM layer
    rows = db.session.execute(
        select(*ATTEMPT_COLUMNS)
        .select_from(Execution.__table__.join(Cue.__table__, c.id == e.cue_id)
                     .join(User.__table__, User.__table__.c.id == c.user_id))
        .where(e.id.in_(list(claimed)))).all()
    return prepare_rows(rows, claimed, now)


def prepare_rows(rows, claimed: dict[Any, datetime], now: datetime
                 ) -> tuple[list[Attempt], dict[Any, str | None]]:
    """:func:`prepare_attempts` from rows already read (``ATTEMPT_COLUMNS``); commits."""
    outcomes: dict[Any, str | None] = {execution_id: None for execution_id in claimed}
    attempts: list[Attempt] = []
    users: dict[uuid.UUID, User] = {}
    for (execution_id, status, last_attempt_at, attempt, triggered_by, scheduled_for,
         override, strategy, cue_id, name, payload, callback_headers, method, url,
         schedule_type, next_run, max_attempts, backoff, user_id, secret) in rows:
        claimed_at = claimed[execution_id]
        if status != "delivering" or last_attempt_at != claimed_at:
            continue
        if attempt == 1 and triggered_by == "scheduler" and quotas_enforced():
            if user_id not in users:
                users[user_id] = db.session.get(User, user_id)
            if not execution_limit_allows(users[user_id], now):
                db.session.execute(
                    update(Execution).where(*_claim_matches(execution_id, claimed_at))
                    .values(status="failed", error_message=EXECUTION_LIMIT_MESSAGE,
                            updated_at=now).execution_options(synchronize_session=False))
                outcomes[execution_id] = "failed"
                log.info("execution %s not delivered: monthly execution limit", execution_id)
                continue
        execution = _Row(id=execution_id, scheduled_for=scheduled_for)
        cue = _Row(id=cue_id, name=name, payload=effective_payload(payload, override, strategy),
                   callback_headers=callback_headers, retry_backoff_minutes=backoff)
        body = canonical_json(webhook_body(execution, cue, attempt))
        attempts.append(Attempt(
            execution_id=execution_id, claimed_at=claimed_at, attempt=attempt, cue_id=cue_id,
            user_id=user_id, once=schedule_type == "once" and next_run is None,
            max_attempts=max_attempts,
            next_delay=backoff_delay(cue, attempt),
            method=method, url=url or "", body=body,
            headers=webhook_headers(execution, cue, attempt, secret, body, now)
            if secret else None))
    db.session.commit()  # end the read (and keep a grace-period start) before the slow send
    return attempts, outcomes


def send_attempt(attempt: Attempt) -> SendResult | None:
    """Send one prepared attempt (``None``: not sent, the owner has no signing secret)."""
    if attempt.headers is None:
        return None
    return send(attempt.method, attempt.url,
                body=None if attempt.method == "GET" else attempt.body, headers=attempt.headers,
                timeout=float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]))


def attempt_values(attempt: Attempt, result: SendResult | None, finished: datetime
                   ) -> dict[str, Any]:
    """The execution's new column values after ``attempt`` ended with ``result``."""
    if result is None:
        error, http_status, ok = "No webhook signing secret for this account", None, False
    else:
        error, http_status, ok = result.error, result.status_code, result.ok
    values: dict[str, Any] = {"http_status": http_status, "updated_at": finished}
    if ok:
        values.update(status="success", delivered_at=finished, error_message=None,
                      response_body=(result.response_text or "")[:RESPONSE_BODY_LIMIT],
                      next_retry_at=None)
    elif attempt.attempt < attempt.max_attempts:
        values.update(status="retrying", error_message=error,
                      next_retry_at=finished + attempt.next_delay)
    else:
        values.update(status="failed", error_message=error, next_retry_at=None)
    return values


#: One statement for a batch of results on PostgreSQL (conditional on each claim).
_RECORD_PG = text("""
UPDATE executions AS e
SET status = v.status, http_status = v.http_status, updated_at = v.finished,
    error_message = v.error_message, next_retry_at = v.next_retry_at,
    delivered_at = CASE WHEN v.status = 'success' THEN v.finished ELSE e.delivered_at END,
    response_body = CASE WHEN v.status = 'success' THEN v.response_body
                         ELSE e.response_body END
FROM unnest(CAST(:ids AS uuid[]), CAST(:claimed AS timestamptz[]), CAST(:statuses AS text[]),
            CAST(:http_statuses AS integer[]), CAST(:errors AS text[]),
            CAST(:bodies AS text[]), CAST(:finished AS timestamptz[]),
            CAST(:retry_at AS timestamptz[]))
     AS v(id, claimed_at, status, http_status, error_message, response_body, finished,
          next_retry_at)
WHERE e.id = v.id AND e.status = 'delivering' AND e.last_attempt_at = v.claimed_at
RETURNING e.id
""")

#: ``run_count`` / ``last_run`` of a batch's cues, locked in id order (two batches sharing cues
#: never wait on each other in a cycle).
_COUNT_RUNS_PG = text("""
UPDATE cues SET run_count = cues.run_count + v.runs, last_run = v.last_run,
    updated_at = :updated
FROM (SELECT c.id, u.runs, u.last_run
      FROM cues AS c
      JOIN unnest(CAST(:ids AS text[]), CAST(:runs AS integer[]), CAST(:last AS timestamptz[]))
           AS u(id, runs, last_run) ON c.id = u.id
      ORDER BY c.id FOR UPDATE OF c) AS v
WHERE cues.id = v.id
""")

#: The monthly execution counters of a batch, in key order.
_COUNT_USAGE_PG = text("""
INSERT INTO execution_usage (user_id, month, executions)
SELECT * FROM unnest(CAST(:users AS uuid[]), CAST(:months AS text[]), CAST(:counts AS integer[]))
ON CONFLICT (user_id, month)
DO UPDATE SET executions = execution_usage.executions + excluded.executions
""")


def _write_results(done: list[tuple[Attempt, dict[str, Any]]]) -> set:
    """Write the results (conditional on the claims); return the execution ids written."""
    if dialect_name() == "postgresql":
        written = db.session.execute(_RECORD_PG, {
            "ids": [a.execution_id for a, _ in done],
            "claimed": [a.claimed_at for a, _ in done],
            "statuses": [v["status"] for _, v in done],
            "http_statuses": [v["http_status"] for _, v in done],
            "errors": [v["error_message"] for _, v in done],
            "bodies": [v.get("response_body") for _, v in done],
            "finished": [v["updated_at"] for _, v in done],
            "retry_at": [v["next_retry_at"] for _, v in done]})
        return {row[0] for row in written}
    ids = set()
    for attempt, values in done:
        result = db.session.execute(
            update(Execution).where(*_claim_matches(attempt.execution_id, attempt.claimed_at))
            .values(**values).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            ids.add(attempt.execution_id)
    return ids


def _count_runs(done: list[tuple[Attempt, dict[str, Any]]]) -> None:
    """``run_count`` + 1 and ``last_run`` for each written attempt's cue (locked in id order)."""
    runs: Counter = Counter()
    last: dict[str, datetime] = {}
    for attempt, values in done:
        runs[attempt.cue_id] += 1
        last[attempt.cue_id] = max(last.get(attempt.cue_id, values["updated_at"]),
                                   values["updated_at"])
    cue_ids = sorted(runs)
    if dialect_name() == "postgresql":
        db.session.execute(_COUNT_RUNS_PG, {"ids": cue_ids,
                                            "runs": [runs[c] for c in cue_ids],
                                            "last": [last[c] for c in cue_ids],
                                            # as the column's onupdate does elsewhere
                                            "updated": utcnow()})
        return
    for cue_id in cue_ids:
        db.session.execute(update(Cue).where(Cue.id == cue_id)
                           .values(run_count=Cue.run_count + runs[cue_id],
                                   last_run=last[cue_id])
                           .execution_options(synchronize_session=False))


def _count_usage(done: list[tuple[Attempt, dict[str, Any]]]) -> None:
    """The monthly execution counters: + successful deliveries, one upsert in key order."""
    counts: Counter = Counter((a.user_id, month_key(v["updated_at"])) for a, v in done
                              if v["status"] == "success")
    if not counts:
        return
    keys = sorted(counts, key=lambda key: (str(key[0]), key[1]))
    if dialect_name() == "postgresql":
        db.session.execute(_COUNT_USAGE_PG, {"users": [user_id for user_id, _ in keys],
                                             "months": [month for _, month in keys],
                                             "counts": [counts[key] for key in keys]})
        return
    stmt = sqlite.insert(ExecutionUsage).values(
        [{"user_id": user_id, "month": month, "executions": counts[(user_id, month)]}
         for user_id, month in keys])
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=["user_id", "month"],
        set_={"executions": ExecutionUsage.executions + stmt.excluded.executions}))


def record_attempts(results: list[tuple[Attempt, SendResult | None, datetime]],
                    escalate: Callable[..., Any] | None = None) -> dict[Any, str | None]:
    """Write the results of finished attempts in one transaction; return each new status.

    A status is ``None`` when the claim was lost during delivery (the result is discarded).
    Final failures are escalated (``on_failure``) after the commit: ``escalate(cue_id,
    attempts, http_status, error, now)``, :func:`escalate_failure` unless given (the worker
    hands it to a delivery thread, since it may send a request).
    """
    escalate = escalate or escalate_failure
    if not results:
        return {}
    done = [(attempt, attempt_values(attempt, result, finished))
            for attempt, result, finished in results]
    written_ids = _write_results(done)
    written = [(a, v) for a, v in done if a.execution_id in written_ids]
    statuses: dict[Any, str | None] = {a.execution_id: None for a, _ in done}
    for attempt, _ in done:
        if attempt.execution_id not in written_ids:
            log.info("execution %s: claim lost during delivery; result discarded",
                     attempt.execution_id)
    if written:
        _count_runs(written)
        _count_usage(written)
        finished_once = [(a, v) for a, v in written
                         if a.once and v["status"] in ("success", "failed")]
        if finished_once:
            from app.scheduling.services.executions import finish_once_cue

            for attempt, values in finished_once:
                finish_once_cue(attempt.cue_id, values["status"] == "success",
                                values["updated_at"])
    db.session.commit()
    from app.metrics import count_webhook_results

    count_webhook_results(v["status"] for _, v in written)
    by_id = {id(a): r for a, r, _ in results}
    for attempt, values in written:
        statuses[attempt.execution_id] = values["status"]
        if values["status"] == "failed":
            result = by_id[id(attempt)]
            escalate(attempt.cue_id, attempt.attempt,
                     result.status_code if result is not None else None,
                     values["error_message"], values["updated_at"])
    return statuses


def deliver_webhook(execution_id, claimed_at: datetime, clock=utcnow) -> str | None:
    """Make one delivery attempt of a claimed webhook execution; return its new status.

    Returns ``None`` when the claim was lost meanwhile (recovered as stale, cue deleted).
    """
    attempts, outcomes = prepare_attempts([(execution_id, claimed_at)], clock())
    if not attempts:
        return outcomes.get(execution_id)
    attempt = attempts[0]
    result = send_attempt(attempt)
    return record_attempts([(attempt, result, clock())])[execution_id]
def dashboard_url(cue_id: str) -> str:
    """Where a failure alert sends a person: the console's page of the cue when the console is
    on (``CONSOLE_ENABLED``), else the cue's API resource (the only page there is)."""
    base = current_app.config["BASE_URL"].rstrip("/")
    if current_app.config.get("CONSOLE_ENABLED"):
        return f"{base}/console/cues/{cue_id}"
    return f"{base}/v1/cues/{cue_id}"


def escalate_failure(cue_id: str, attempts: int, http_status: int | None, error: str | None,
                     now: datetime) -> None:
    """Apply the cue's ``on_failure`` after a final failure: pause, webhook, e-mail (logged).

    Best effort: a failing failure-webhook is logged, never retried, never raises.
    """
    cue = db.session.scalar(select(Cue).where(Cue.id == cue_id))
    if cue is None:
        return
    policy = cue.on_failure or {}
    if policy.get("pause") and cue.schedule_type == "recurring" and cue.status == "active":
        db.session.execute(update(Cue).where(Cue.id == cue.id, Cue.status == "active")
                           .values(status="paused", next_run=None, updated_at=now)
                           .execution_options(synchronize_session=False))
        db.session.commit()
        log.info("cue %s paused after a final failure (on_failure.pause)", cue.id)
    if policy.get("email"):
        # No mail transport is configured in this deployment; record that it would be sent.
        log.info("cue %s failed: failure e-mail not sent (no mail transport configured)",
                 cue.id)
    if policy.get("webhook"):
        body = {"event": "cue.failed", "cue_id": cue.id, "cue_name": cue.name,
                "attempts": attempts, "last_http_status": http_status,
                "last_error": (error or "")[:500] or None, "failed_at": now.isoformat(),
                "dashboard_url": dashboard_url(cue.id)}
        result = send("POST", policy["webhook"], body=canonical_json(body),
                      headers={"Content-Type": "application/json"},
                      timeout=FAILURE_WEBHOOK_TIMEOUT)
        if not result.ok:
            log.warning("cue %s: on_failure webhook failed: %s", cue.id, result.error)
