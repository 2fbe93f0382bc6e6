"""Queue and worker figures for ``GET /health`` (wire §12.2); never raises."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from app.db import utcnow
from app.extensions import db
from app.scheduling.models import Cue, Execution, Worker

log = logging.getLogger(__name__)


def queue_summary(now: datetime | None = None) -> dict[str, int]:
    """Due webhook deliveries, stale deliveries, waiting retries and unclaimed worker jobs."""
    now = now or utcnow()
    stale_cutoff = now - timedelta(seconds=current_app.config["EXECUTION_STALE_AFTER_SECONDS"])

    def count(*conditions) -> int:
        return db.session.scalar(select(func.count()).select_from(Execution)
                                 .join(Cue, Cue.id == Execution.cue_id)
                                 .where(*conditions)) or 0

    return {
        "pending_outbox": count(Cue.transport == "webhook", Execution.status == "pending",
                                Execution.scheduled_for <= now),
        "stale_executions": count(Cue.transport == "webhook", Execution.status == "delivering",
                                  Execution.updated_at < stale_cutoff),
        "pending_retries": count(Execution.status.in_(("retrying", "retry_ready"))),
        "pending_worker_claims": count(Cue.transport == "worker",
                                       Execution.status == "pending",
                                       Execution.scheduled_for <= now),
    }


def add_scheduling_health(report: dict[str, Any]) -> None:
    """Fill ``queue`` and (when workers exist) ``workers`` of a health report in place."""
    try:
        now = utcnow()
        report["queue"] = queue_summary(now)
        cutoff = now - timedelta(seconds=current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])
        active, last = db.session.execute(
            select(func.count(Worker.id).filter(Worker.last_heartbeat >= cutoff),
                   func.max(Worker.last_heartbeat))).one()
        if last is not None:
            report["workers"] = {"active_count": int(active or 0),
                                 "last_heartbeat": last.isoformat()}
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - health must answer even if this fails
        log.warning("health: queue figures unavailable: %s", type(exc).__name__)
        db.session.rollback()


__all__ = ["add_scheduling_health", "queue_summary"]
