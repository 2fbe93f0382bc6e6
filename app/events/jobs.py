"""Background jobs of the event primitive, listed in ``app.worker.JOBS``: webhook dispatch,
digests and retention.  Each is called as ``job(ctx)`` inside an app context."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select

from app.events import digest, dispatch
from app.events.models import Event
from app.extensions import db

log = logging.getLogger(__name__)

#: Old events deleted per statement by the retention job.
RETENTION_BATCH = 5000


class InFlight:
    """Subscriptions this process is sending a batch for (shared by the delivery threads)."""

    def __init__(self):
        self._ids: set = set()
        self._lock = threading.Lock()

    def add(self, subscription_id) -> None:
        with self._lock:
            self._ids.add(subscription_id)

    def discard(self, subscription_id) -> None:
        with self._lock:
            self._ids.discard(subscription_id)

    def release(self) -> None:
        """Shutdown hook: leases still held go back at once instead of expiring."""
        with self._lock:
            ids = sorted(self._ids)
        if dispatch.release(ids):
            log.info("released %d event subscription leases", len(ids))


def dispatch_webhooks(ctx) -> int:
    """Lease due webhook subscriptions (one per free delivery thread) and send their events."""
    in_flight = ctx.state.get("event_dispatch_in_flight")
    if in_flight is None:
        in_flight = ctx.state["event_dispatch_in_flight"] = InFlight()
        ctx.on_shutdown(in_flight.release)
    claimed = dispatch.claim(ctx.free_slots(), ctx.now())
    for subscription_id in claimed:
        in_flight.add(subscription_id)
        ctx.submit(_deliver, in_flight, subscription_id)
    return len(claimed)


def _deliver(in_flight: InFlight, subscription_id) -> None:
    try:
        dispatch.deliver(subscription_id)
    finally:
        in_flight.discard(subscription_id)


def emit_digests(ctx) -> int:
    """Bundle waiting priority 1–2 deliveries into digests (again at once only on a backlog)."""
    _written, more = digest.emit_digests(ctx.now())
    return 1 if more else 0


def prune_events(ctx) -> int:
    """Delete events older than ``EVENT_RETENTION_DAYS`` (one batch; 0 keeps them)."""
    days = current_app.config["EVENT_RETENTION_DAYS"]
    if days <= 0:
        return 0
    cutoff = ctx.now() - timedelta(days=days)
    old = select(Event.id).where(Event.emitted_at < cutoff).limit(RETENTION_BATCH)
    deleted = db.session.execute(delete(Event).where(Event.id.in_(old))
                                 .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if deleted:
        log.info("events retention: %d deleted", deleted)
    return deleted
