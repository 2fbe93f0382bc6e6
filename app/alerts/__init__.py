"""Alerts: raised by outcome reporting, listed by ``GET /v1/alerts``, pushed to the owner's
alert webhook by the background worker (wire §12.6, §13.5, §4.9)."""
