"""Background jobs of the messaging primitive, listed in ``app.worker.JOBS``.

Each is called as ``job(ctx)`` by ``flask worker run`` inside an app context and returns how
much work it did (a positive number makes the loop run it again at once).
"""

from __future__ import annotations

import logging
import threading

from app.messaging.services import delivery, retention

log = logging.getLogger(__name__)


class InFlight:
    """Ids of the pushes this process is sending (shared by the delivery threads)."""

    def __init__(self):
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, message_id: str) -> None:
        with self._lock:
            self._ids.add(message_id)

    def discard(self, message_id: str) -> None:
        with self._lock:
            self._ids.discard(message_id)

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._ids)

    def release(self) -> None:
        """Shutdown hook: pushes still in flight go back to the queue."""
        released = delivery.release_pushes(self.snapshot())
        if released:
            log.info("released %d in-flight message pushes to the queue", released)


def deliver_pushes(ctx) -> int:
    """Claim due message pushes (as many as there are free delivery threads) and send them."""
    in_flight = ctx.state.get("message_push_in_flight")
    if in_flight is None:
        in_flight = ctx.state["message_push_in_flight"] = InFlight()
        ctx.on_shutdown(in_flight.release)
    claimed = delivery.claim_pushes(ctx.free_slots(), ctx.now())
    for message_id, attempt in claimed:
        in_flight.add(message_id)
        ctx.submit(_deliver, in_flight, message_id, attempt)
    return len(claimed)


def _deliver(in_flight: InFlight, message_id: str, attempt: int) -> None:
    from app.metrics import count_push_result

    try:
        count_push_result(delivery.deliver_push(message_id, attempt))
    finally:
        in_flight.discard(message_id)


def recover_stale_pushes(ctx) -> int:
    """Retry or fail pushes a lost worker left in ``delivering``."""
    return delivery.recover_stale_pushes(ctx.now())


def run_retention(ctx) -> int:
    """Expire and delete old messages and free spent idempotency keys (one batch each)."""
    report = retention.run_retention(ctx.now())
    if report.total:
        log.info("message retention: %d expired, %d deleted, %d keys freed", report.expired,
                 report.deleted, report.keys_freed)
    return report.total
