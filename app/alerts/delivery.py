"""Alert webhook delivery (wire §13.5): claim pending alerts, send each one signed, record it.

An alert is sent once: ``POST`` to the owner's ``alert_webhook_url`` with a 10 s timeout, the
destination re-checked at delivery time, no redirect followed, no retry.  The URL and secret
are read when the alert is sent, so a URL removed or a secret rotated since the alert was raised
is honoured.  Without a secret nothing is sent unsigned: the alert is marked ``failed`` and says
why (``GET /v1/auth/alert-webhook-secret`` mints one).

Claiming is a guarded ``UPDATE`` of ``pending`` rows (picked with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so two worker processes never send one alert.  A claim older than
:data:`STALE_CLAIM` (its worker died mid-send) is claimed again: a receiver may then see an alert
twice and should de-duplicate on ``X-CueAPI-Alert-Id``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from app.alerts.models import Alert
from app.db import dialect_name, utcnow
from app.extensions import db
from app.outbound.http import send
from app.outbound.signing import canonical_json, signature_headers
from app.users.models import User

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
#: A ``sending`` claim older than this belongs to a worker that stopped mid-send.
STALE_CLAIM = timedelta(seconds=60)
NO_SECRET = ("No alert webhook secret: read GET /v1/auth/alert-webhook-secret once to create "
             "it; alerts are never sent unsigned")
NO_URL = "The alert webhook URL was removed before the alert was sent"


def alert_body(alert: Alert) -> dict[str, Any]:
    """The JSON body a receiver gets (signed as canonical JSON)."""
    return {"alert_id": str(alert.id), "alert_type": alert.alert_type,
            "severity": alert.severity, "message": alert.message,
            "execution_id": str(alert.execution_id) if alert.execution_id else None,
            "cue_id": alert.cue_id, "created_at": alert.created_at.isoformat(),
            "metadata": alert.meta or {}}


def claim_alerts(limit: int, now: datetime | None = None) -> list[tuple[uuid.UUID, datetime]]:
    """Claim up to ``limit`` alerts to send; return ``(alert id, claim time)`` pairs."""
    if limit <= 0:
        return []
    now = now or utcnow()
    claimable = or_(Alert.delivery_state == "pending",
                    (Alert.delivery_state == "sending")
                    & (Alert.delivery_claimed_at < now - STALE_CLAIM))
    picked = (select(Alert.id).where(claimable).order_by(Alert.created_at, Alert.id)
              .limit(limit))
    if dialect_name() == "postgresql":
        picked = picked.with_for_update(skip_locked=True)
    ids = db.session.scalars(picked).all()
    if not ids:
        db.session.rollback()
        return []
    claimed = db.session.execute(
        update(Alert).where(Alert.id.in_(ids), claimable)
        .values(delivery_state="sending", delivery_claimed_at=now)
        .returning(Alert.id).execution_options(synchronize_session=False)).scalars().all()
    db.session.commit()
    return [(alert_id, now) for alert_id in claimed]


def _finish(alert_id, claimed_at: datetime, state: str, error: str | None) -> bool:
    result = db.session.execute(
        update(Alert).where(Alert.id == alert_id, Alert.delivery_state == "sending",
                            Alert.delivery_claimed_at == claimed_at)
        .values(delivery_state=state, delivery_error=(error or None) and error[:500])
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def deliver_alert(alert_id, claimed_at: datetime, clock=utcnow) -> str | None:
    """Send one claimed alert; return ``delivered`` / ``failed`` (``None``: claim lost)."""
    row = db.session.execute(
        select(Alert, User.alert_webhook_url, User.alert_webhook_secret)
        .join(User, User.id == Alert.user_id).where(Alert.id == alert_id)).one_or_none()
    if row is None:
        db.session.rollback()
        return None
    alert, url, secret = row
    if alert.delivery_state != "sending" or alert.delivery_claimed_at != claimed_at:
        db.session.rollback()
        return None
    body, alert_type = canonical_json(alert_body(alert)), alert.alert_type
    db.session.rollback()  # end the read before the (slow) send
    if not url:
        state, error = "failed", NO_URL
    elif not secret:
        state, error = "failed", NO_SECRET
    else:
        headers = {"Content-Type": "application/json", "X-CueAPI-Alert-Id": str(alert_id),
                   "X-CueAPI-Alert-Type": alert_type,
                   **signature_headers(secret, body, clock())}
        result = send("POST", url, body=body, headers=headers, timeout=TIMEOUT_SECONDS)
        state, error = ("delivered", None) if result.ok else ("failed", result.error)
    if not _finish(alert_id, claimed_at, state, error):
        return None
    if state == "failed":
        log.info("alert %s not delivered: %s", alert_id, error)
    return state


def release_alerts(claims: list[tuple[uuid.UUID, datetime]]) -> int:
    """Put claimed alerts back to ``pending`` (worker shutdown); return how many."""
    released = 0
    for alert_id, claimed_at in claims:
        result = db.session.execute(
            update(Alert).where(Alert.id == alert_id, Alert.delivery_state == "sending",
                                Alert.delivery_claimed_at == claimed_at)
            .values(delivery_state="pending", delivery_claimed_at=None)
            .execution_options(synchronize_session=False))
        released += result.rowcount
    db.session.commit()
    return released
