"""Verification of reported outcomes (wire §8.10): accept or reject, put back into
``verification_pending``, attach evidence; and the live-claim attestation (§8.11)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import update

from app.auth.tokens import secrets_equal
from app.db import utcnow
from app.errors import BadRequest, Conflict
from app.extensions import db
from app.scheduling.models import Execution
from app.scheduling.services.executions import MAX_METADATA_BYTES, evidence_from
from app.scheduling.services.lookup import get_execution
from app.users.models import User

VERIFIABLE = ("reported_success", "reported_failure", "verification_pending")


def verify_execution(user: User, execution_id: str, valid: bool, reason: str | None,
                     now: datetime | None = None) -> Execution:
    """Accept or reject a reported outcome (409 ``invalid_state`` from other states)."""
    now = now or utcnow()
    execution = get_execution(user, execution_id, for_update=True)
    if execution.outcome_state not in VERIFIABLE:
        db.session.rollback()
        raise Conflict("invalid_state", f"Outcome state is {execution.outcome_state or 'none'}; "
                       f"only {', '.join(VERIFIABLE)} can be verified")
    execution.outcome_state = "verified_success" if valid else "verification_failed"
    if not valid and reason:
        evidence = dict(execution.evidence or {})
        summary = evidence.get("summary")
        evidence["summary"] = f"{summary} | {reason}" if summary else reason
        execution.evidence = evidence
    execution.updated_at = now
    db.session.commit()
    return execution


def _require_outcome(execution: Execution) -> None:
    if execution.outcome is None:
        db.session.rollback()
        raise Conflict("no_outcome", "No outcome has been recorded for this execution yet")


def mark_verification_pending(user: User, execution_id: str, now: datetime | None = None
                              ) -> Execution:
    """Put a reported outcome back into ``verification_pending`` (409 ``no_outcome``)."""
    now = now or utcnow()
    execution = get_execution(user, execution_id, for_update=True)
    _require_outcome(execution)
    execution.outcome_state = "verification_pending"
    execution.updated_at = now
    db.session.commit()
    return execution


def update_evidence(user: User, execution_id: str, data: dict[str, Any],
                    now: datetime | None = None) -> Execution:
    """Merge evidence fields into a recorded outcome (falsy values are ignored)."""
    now = now or utcnow()
    execution = get_execution(user, execution_id, for_update=True)
    _require_outcome(execution)
    evidence = dict(execution.evidence or {})
    evidence.update(evidence_from(data))
    if data.get("metadata"):
        metadata = data["metadata"]
        if len(json.dumps(metadata).encode("utf-8")) > MAX_METADATA_BYTES:
            db.session.rollback()
            raise BadRequest("metadata_too_large",
                             f"metadata must encode to at most {MAX_METADATA_BYTES} bytes")
        evidence["metadata"] = metadata
    execution.evidence = evidence
    execution.updated_at = now
    db.session.commit()
    return execution



def attest_live_claim(user: User, execution_id: str, session_token: str,
                      now: datetime | None = None) -> tuple[Execution, datetime]:
    """Record a live-claim attestation (wire §8.11); return the execution and its stamp.

    The first attestation wins, by a conditional update on an unset ``live_claimed_at``, so of
    two racing tokens exactly one is recorded.  The same token again is an idempotent success
    (the original time); a different one is ``409 already_attested``.
    """
    now = now or utcnow()
    execution = get_execution(user, execution_id)
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == execution.id, Execution.live_claimed_at.is_(None))
        .values(live_claim_session_token=session_token, live_claimed_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount != 1:
        db.session.refresh(execution)
        if not secrets_equal(session_token, execution.live_claim_session_token or ""):
            raise Conflict("already_attested", "Execution already has a live-claim attestation "
                                               "from a different session token")
        return execution, execution.live_claimed_at
    return execution, now
