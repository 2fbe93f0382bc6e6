"""Pull-worker services: heartbeats, listing and removal (wire §9)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from app.db import dialect_name, utcnow
from app.errors import NotFound
from app.extensions import db
from app.scheduling.models import Worker
from app.users.models import User

#: A worker silent for longer than the heartbeat timeout but less than this is ``stale``.
DEAD_AFTER_SECONDS = 900


def record_worker_heartbeat(user: User, worker_id: str, handlers: list[str] | None,
                            now: datetime | None = None) -> datetime:
    """Upsert the worker row ``(user, worker_id)`` with ``handlers`` and ``last_heartbeat``.

    A single ``INSERT … ON CONFLICT DO UPDATE`` so two heartbeats racing for a new worker
    cannot fail on the unique key.
    """
    now = now or utcnow()
    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    insert = dialect.insert(Worker).values(user_id=user.id, worker_id=worker_id,
                                           handlers=handlers, last_heartbeat=now, created_at=now)
    db.session.execute(insert.on_conflict_do_update(
        index_elements=["user_id", "worker_id"],
        set_={"handlers": insert.excluded.handlers, "last_heartbeat": now}))
    db.session.commit()
    return now


def heartbeat_status(seconds: float) -> str:
    """``active`` within the heartbeat timeout, ``stale`` up to 15 minutes, else ``dead``."""
    if seconds < current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"]:
        return "active"
    if seconds < max(DEAD_AFTER_SECONDS, current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"]):
        return "stale"
    return "dead"


def list_workers(user: User, now: datetime | None = None) -> list[dict[str, Any]]:
    """The user's workers, most recent heartbeat first."""
    now = now or utcnow()
    rows = db.session.scalars(select(Worker).where(Worker.user_id == user.id)
                              .order_by(Worker.last_heartbeat.desc(), Worker.worker_id)).all()
    result = []
    for worker in rows:
        seconds = max(0, int((now - worker.last_heartbeat).total_seconds()))
        result.append({"worker_id": worker.worker_id, "last_heartbeat": worker.last_heartbeat,
                       "seconds_since_heartbeat": seconds,
                       "heartbeat_status": heartbeat_status(seconds),
                       "handlers": worker.handlers, "registered_since": worker.created_at})
    return result


def delete_worker(user: User, worker_id: str) -> None:
    """Forget a worker (404 ``worker_not_found``).  Its claims become recoverable at once."""
    worker = db.session.scalar(select(Worker).where(Worker.user_id == user.id,
                                                    Worker.worker_id == worker_id))
    if worker is None:
        raise NotFound("worker_not_found", f"Worker {worker_id!r} not found")
    db.session.delete(worker)
    db.session.commit()


def live_workers_count(now: datetime | None = None) -> int:
    """Workers (all users) that sent a heartbeat within the heartbeat timeout."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=current_app.config["WORKER_HEARTBEAT_TIMEOUT_SECONDS"])


    return db.session.scalar(select(func.count()).select_from(Worker)
                             .where(Worker.last_heartbeat >= cutoff)) or 0



