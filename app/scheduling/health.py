"""Queue and worker figures for ``GET /health`` (wire §12.2); never raises."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, func, select

from app.db import UTCDateTime, utcnow
from app.extensions import db
from app.scheduling.models import Cue, Execution, Worker

log = logging.getLogger(__name__)


def queue_summary(now: datetime | None = None) -> dict[str, int]:
    """Due webhook deliveries, stale deliveries, waiting retries and unclaimed worker jobs.

    One query (conditional counts over the open executions), so a load balancer polling
    ``/health`` costs one round trip, not four.
    """
    now = now or utcnow()
    stale_cutoff = now - timedelta(seconds=current_app.config["EXECUTION_STALE_AFTER_SECONDS"])
    row = db.session.execute(_queue_statement(), {"now": now, "stale_cutoff": stale_cutoff}).one()
    names = ("pending_outbox", "stale_executions", "pending_retries", "pending_worker_claims")
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


@cache
def _queue_statement():
    """Built once, with bind parameters: constructing it costs more than running it."""
    now, stale_cutoff = bindparam("now", type_=UTCDateTime), bindparam("stale_cutoff",
                                                                       type_=UTCDateTime)
    webhook, worker = Cue.transport == "webhook", Cue.transport == "worker"
    pending_due = (Execution.status == "pending") & (Execution.scheduled_for <= now)
    return (select(func.count().filter(webhook & pending_due),
                   func.count().filter(webhook & (Execution.status == "delivering")
                                       & (Execution.updated_at < stale_cutoff)),
                   func.count().filter(Execution.status.in_(("retrying", "retry_ready"))),
                   func.count().filter(worker & pending_due))
            .select_from(Execution).join(Cue, Cue.id == Execution.cue_id)
            .where(Execution.status.in_(("pending", "delivering", "retrying", "retry_ready"))))


@cache
def _workers_statement():
    cutoff = bindparam("cutoff", type_=UTCDateTime)
    return select(func.count(Worker.id).filter(Worker.last_heartbeat >= cutoff),
                  func.max(Worker.last_heartbeat))


def add_scheduling_health(report: dict[str, Any]) -> None:
    """Fill ``queue``, ``services.worker`` and (when workers exist) ``workers`` of a health
    report in place."""
    try:
        now = utcnow()
        report["queue"] = queue_summary(now)
        cutoff = now - timedelta(seconds=current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])
        active, last = db.session.execute(_workers_statement(), {"cutoff": cutoff}).one()
        report["services"]["worker"] = "ok" if active else "none"
        if last is not None:
            report["workers"] = {"active_count": int(active or 0),
                                 "last_heartbeat": last.isoformat()}
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - health must answer even if this fails
        log.warning("health: queue figures unavailable: %s", type(exc).__name__)
        db.session.rollback()


__all__ = ["add_scheduling_health", "queue_summary"]
