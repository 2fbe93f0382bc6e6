"""Alert business rules: raising alerts from outcomes, listing them, the alert-webhook secret.

Raising (wire §8.8): an outcome whose state is ``verification_failed`` raises a
``verification_failed`` alert about that execution; a failed outcome on a cue whose latest
:data:`CONSECUTIVE_FAILURE_THRESHOLD` or more finished executions all failed raises
``consecutive_failures`` about the cue.  Both run inside the outcome's own transaction, so an
outcome is never recorded without its alert or the other way round.

Deduplication: an alert of the same type about the same subject (the execution for
``verification_failed``, the cue for ``consecutive_failures``) created for the same user in the
last :data:`DEDUP_WINDOW` is not raised again.  The cue's row is locked first, so two failures of
one cue reported at the same moment cannot both pass the check.  (Upstream keys
``consecutive_failures`` by execution as well, so its window never suppresses anything for
that type, although its comments say one alert per streak is the intent; Cueline does what the
comments say.)

Delivery to the owner's alert webhook is not done here: a new alert is marked ``pending`` when
the owner has an alert webhook URL, and the worker's ``alert_webhooks`` job sends it
(:mod:`app.alerts.delivery`), so a slow receiver never holds up an outcome report.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from app.alerts.models import Alert
from app.db import dialect_name
from app.extensions import db
from app.scheduling.models import Cue, Execution
from app.users.models import User

DEDUP_WINDOW = timedelta(minutes=5)
CONSECUTIVE_FAILURE_THRESHOLD = 3


def new_alert_webhook_secret() -> str:
    """64 lowercase hex characters (no prefix, wire §1.4)."""
    return secrets.token_hex(32)


def _recent_duplicate(user_id, alert_type: str, now: datetime, *, execution_id=None,
                      cue_id: str | None = None) -> bool:
    query = select(Alert.id).where(Alert.user_id == user_id, Alert.alert_type == alert_type,
                                   Alert.created_at > now - DEDUP_WINDOW)
    if execution_id is not None:
        query = query.where(Alert.execution_id == execution_id)
    elif cue_id is not None:
        query = query.where(Alert.cue_id == cue_id)
    return db.session.scalar(query.limit(1)) is not None


def add_alert(user_id, alert_type: str, message: str, now: datetime, *,
              severity: str = "warning", cue_id: str | None = None, execution_id=None,
              metadata: dict[str, Any] | None = None, dedup_on_cue: bool = False
              ) -> Alert | None:
    """Add an alert to the current transaction (the caller commits); ``None`` if deduplicated.

    The window is keyed by the execution, or by the cue when ``dedup_on_cue``.
    """
    key = {"cue_id": cue_id} if dedup_on_cue else {"execution_id": execution_id,
                                                   "cue_id": cue_id}
    if _recent_duplicate(user_id, alert_type, now, **key):
        return None
    webhook = db.session.scalar(select(User.alert_webhook_url).where(User.id == user_id))
    alert = Alert(id=uuid.uuid4(), user_id=user_id, cue_id=cue_id, execution_id=execution_id,
                  alert_type=alert_type, severity=severity, message=message, meta=metadata,
                  acknowledged=False, created_at=now,
                  delivery_state="pending" if webhook else None)
    db.session.add(alert)
    return alert


def consecutive_failures(cue_id: str) -> int:
    """Failed executions of the cue since its latest successful one (finished ones only)."""
    last_success = (select(func.max(Execution.created_at))
                    .where(Execution.cue_id == cue_id, Execution.status == "success")
                    .scalar_subquery())
    query = (select(func.count()).select_from(Execution)
             .where(Execution.cue_id == cue_id, Execution.status == "failed",
                    last_success.is_(None) | (Execution.created_at > last_success)))
    return int(db.session.scalar(query) or 0)


def _lock_cue(cue_id: str) -> None:
    """Serialise alert decisions about one cue: on PostgreSQL a row lock held to the commit;
    SQLite already serialises writers (the outcome was written before this runs)."""
    if dialect_name() == "postgresql":
        db.session.execute(select(Cue.id).where(Cue.id == cue_id).with_for_update())


def raise_outcome_alerts(user_id, execution_id, cue_id: str, transport: str, success: bool,
                         outcome_state: str, now: datetime) -> list[Alert]:
    """Add the alerts an outcome report raises (wire §8.8) to the caller's transaction.

    Call after the outcome (and, for worker executions, the execution's new status) has been
    written in the same transaction, so the failure streak includes it.
    """
    raised: list[Alert] = []
    if outcome_state == "verification_failed":
        alert = add_alert(
            user_id, "verification_failed",
            f"Execution {execution_id} reported success but failed verification "
            "(required evidence missing).", now, cue_id=cue_id, execution_id=execution_id,
            metadata={"outcome_state": "verification_failed", "transport": transport})
        if alert is not None:
            raised.append(alert)
    if not success:
        _lock_cue(cue_id)
        streak = consecutive_failures(cue_id)
        if streak >= CONSECUTIVE_FAILURE_THRESHOLD:
            alert = add_alert(
                user_id, "consecutive_failures",
                f"Cue {cue_id} has {streak} consecutive failed executions.", now,
                cue_id=cue_id, execution_id=execution_id,
                metadata={"consecutive_failures": streak}, dedup_on_cue=True)
            if alert is not None:
                raised.append(alert)
    return raised


def list_alerts(user_id, *, alert_type: str | None, since: datetime | None, limit: int,
                offset: int) -> tuple[list[Alert], int]:
    """The user's alerts, newest first, and the filtered total."""
    conditions = [Alert.user_id == user_id]
    if alert_type:
        conditions.append(Alert.alert_type == alert_type)
    if since is not None:
        conditions.append(Alert.created_at >= since)
    total = db.session.scalar(select(func.count()).select_from(Alert).where(*conditions)) or 0
    rows = db.session.scalars(select(Alert).where(*conditions)
                              .order_by(Alert.created_at.desc(), Alert.id)
                              .limit(limit).offset(offset)).all()
    return list(rows), int(total)


def alert_webhook_secret(user: User) -> str:
    """The user's alert-webhook signing secret, minted and stored on first use.

    A conditional update, so two first reads at once agree on one secret.
    """
    if user.alert_webhook_secret:
        return user.alert_webhook_secret
    db.session.execute(update(User).where(User.id == user.id,
                                          User.alert_webhook_secret.is_(None))
                       .values(alert_webhook_secret=new_alert_webhook_secret())
                       .execution_options(synchronize_session=False))
    db.session.commit()
    db.session.refresh(user)
    return user.alert_webhook_secret


def regenerate_alert_webhook_secret(user: User) -> str:
    """Replace the alert-webhook secret; alerts sent from now on are signed with the new one."""
    user.alert_webhook_secret = new_alert_webhook_secret()
    db.session.commit()
    return user.alert_webhook_secret
