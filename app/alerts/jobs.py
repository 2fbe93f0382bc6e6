"""Background job of the alerts domain, listed in ``app.worker.JOBS``."""

from __future__ import annotations

import threading

from app.alerts import delivery


class _InFlight:
    """Claims this process is sending (shared with the delivery threads)."""

    def __init__(self):
        self._claims: set = set()
        self._lock = threading.Lock()

    def add(self, claim) -> None:
        with self._lock:
            self._claims.add(claim)

    def discard(self, claim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def release(self) -> None:
        """Shutdown hook: alerts still being sent go back to ``pending``."""
        with self._lock:
            claims = sorted(self._claims, key=str)
        delivery.release_alerts(claims)


def deliver_alert_webhooks(ctx) -> int:
    """Claim pending alerts (as many as there are free delivery threads) and send them."""
    in_flight = ctx.state.get("alert_webhooks_in_flight")
    if in_flight is None:
        in_flight = ctx.state["alert_webhooks_in_flight"] = _InFlight()
        ctx.on_shutdown(in_flight.release)
    claims = delivery.claim_alerts(ctx.free_slots(), ctx.now())
    for claim in claims:
        in_flight.add(claim)
        ctx.submit(_send, in_flight, claim)
    return len(claims)


def _send(in_flight: _InFlight, claim) -> None:
    try:
        delivery.deliver_alert(*claim)
    finally:
        in_flight.discard(claim)
