"""Webhook delivery of cue executions (wire §13.2) and final-failure escalation.

One attempt = :func:`deliver_webhook` on an execution already claimed (``delivering``) by the
dispatcher.  The attempt's result is written with a conditional update on the claim
(``status = 'delivering'`` and the claim's ``last_attempt_at``), so a delivery interrupted and
recovered elsewhere can never overwrite the newer attempt.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from app.db import utcnow
from app.extensions import db
from app.outbound.http import send
from app.outbound.signing import canonical_json, signature_headers
from app.quotas.cues import (
    EXECUTION_LIMIT_MESSAGE,
    count_successful_delivery,
    execution_limit_allows,
)
from app.scheduling.models import Cue, Execution
from app.users.models import User

log = logging.getLogger(__name__)

FAILURE_WEBHOOK_TIMEOUT = 10.0
RESPONSE_BODY_LIMIT = 2000
#: Headers a cue's custom headers may not set: the signature (§16 #17) and framing.
RESERVED_HEADERS = frozenset({"x-cueapi-signature", "x-cueapi-timestamp", "host",
                              "content-length", "transfer-encoding", "connection"})


def webhook_body(execution: Execution, cue: Cue, attempt: int) -> dict[str, Any]:
    """The JSON body receivers get (signed as canonical JSON)."""
    return {"attempt": attempt, "cue_id": cue.id, "execution_id": str(execution.id),
            "name": cue.name, "payload": cue.payload if cue.payload is not None else {},
            "scheduled_for": execution.scheduled_for.isoformat()}


def webhook_headers(execution: Execution, cue: Cue, attempt: int, secret: str, body: str,
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


def backoff_delay(cue: Cue, attempt: int) -> timedelta:
    """Delay before attempt ``attempt + 1``: ``backoff_minutes[min(attempt-1, len-1)]``."""
    backoff = list(cue.retry_backoff_minutes or [1])
    return timedelta(minutes=backoff[min(attempt - 1, len(backoff) - 1)])


def _claim_matches(execution_id, claimed_at: datetime):
    return (Execution.id == execution_id, Execution.status == "delivering",
            Execution.last_attempt_at == claimed_at)


def deliver_webhook(execution_id, claimed_at: datetime, clock=utcnow) -> str | None:
    """Make one delivery attempt of a claimed webhook execution; return its new status.

    Returns ``None`` when the claim was lost meanwhile (recovered as stale, cue deleted).
    The execution, its cue and their owner are read in one query and everything the attempt
    needs is taken out of them before the read transaction ends, so no row is re-read after the
    (slow) send: an attempt costs a handful of round trips, whatever the payload.
    """
    row = db.session.execute(
        select(Execution, Cue, User).join(Cue, Cue.id == Execution.cue_id)
        .join(User, User.id == Cue.user_id).where(Execution.id == execution_id)).first()
    if row is None:
        db.session.rollback()
        return None
    execution, cue, user = row
    if execution.status != "delivering" or execution.last_attempt_at != claimed_at:
        db.session.rollback()
        return None
    attempt = execution.attempts
    now = clock()
    if (attempt == 1 and execution.triggered_by == "scheduler"
            and not execution_limit_allows(user, now)):
        db.session.execute(update(Execution).where(*_claim_matches(execution.id, claimed_at))
                           .values(status="failed", error_message=EXECUTION_LIMIT_MESSAGE,
                                   updated_at=now).execution_options(synchronize_session=False))
        db.session.commit()
        log.info("execution %s not delivered: monthly execution limit", execution.id)
        return "failed"
    cue_id, user_id, once = cue.id, user.id, cue.schedule_type == "once" and cue.next_run is None
    max_attempts, next_delay = cue.retry_max_attempts, backoff_delay(cue, attempt)
    method, url = cue.callback_method, cue.callback_url or ""
    secret = user.webhook_secret or ""
    body = canonical_json(webhook_body(execution, cue, attempt))
    headers = webhook_headers(execution, cue, attempt, secret, body, now) if secret else None
    db.session.commit()  # end the read (and keep a grace-period start) before the slow send

    if headers is None:
        result = None
        error, http_status, ok = "No webhook signing secret for this account", None, False
    else:
        result = send(method, url, body=None if method == "GET" else body, headers=headers,
                      timeout=float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]))
        error, http_status, ok = result.error, result.status_code, result.ok
    finished = clock()
    values: dict[str, Any] = {"http_status": http_status, "updated_at": finished}
    if ok:
        values.update(status="success", delivered_at=finished, error_message=None,
                      response_body=(result.response_text or "")[:RESPONSE_BODY_LIMIT],
                      next_retry_at=None)
    elif attempt < max_attempts:
        values.update(status="retrying", error_message=error, next_retry_at=finished + next_delay)
    else:
        values.update(status="failed", error_message=error, next_retry_at=None)
    written = db.session.execute(update(Execution).where(*_claim_matches(execution_id,
                                                                          claimed_at))
                                 .values(**values).execution_options(synchronize_session=False))
    if written.rowcount != 1:
        db.session.rollback()
        log.info("execution %s: claim lost during delivery; result discarded", execution_id)
        return None
    db.session.execute(update(Cue).where(Cue.id == cue_id)
                       .values(run_count=Cue.run_count + 1, last_run=finished)
                       .execution_options(synchronize_session=False))
    if ok:
        count_successful_delivery(user_id, finished)
    if once and values["status"] in ("success", "failed"):
        from app.scheduling.services.executions import finish_once_cue

        finish_once_cue(cue_id, ok, finished)
    db.session.commit()
    if values["status"] == "failed":
        escalate_failure(cue_id, attempt, http_status, error, finished)
    return values["status"]


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
                "dashboard_url": f"{current_app.config['BASE_URL'].rstrip('/')}/v1/cues/{cue.id}"}
        result = send("POST", policy["webhook"], body=canonical_json(body),
                      headers={"Content-Type": "application/json"},
                      timeout=FAILURE_WEBHOOK_TIMEOUT)
        if not result.ok:
            log.warning("cue %s: on_failure webhook failed: %s", cue.id, result.error)
