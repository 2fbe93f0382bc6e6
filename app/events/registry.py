"""The event types agents can subscribe to (wire §11.1) and the limits shared by emission,
pull and dispatch."""

from __future__ import annotations

MESSAGE_DELIVERED = "message.delivered"
MESSAGE_DIGEST = "message.digest"
TURN_PASS = "turn.pass"

#: Subscribable event types; a subscription (or an ``event_type`` filter) naming another is a
#: ``400 unknown_event_type``.
EVENT_TYPES = (MESSAGE_DELIVERED, MESSAGE_DIGEST, TURN_PASS)

DELIVERY_TARGETS = ("pull", "webhook")

#: ``inline_body`` embeds a message body of at most this many UTF-8 bytes (32 KiB).
INLINE_BODY_MAX_BYTES = 32 * 1024
#: Priorities whose ``message.delivered`` events the digest job bundles.
DIGEST_PRIORITIES = (1, 2)
#: Priority whose webhook deliveries are debounced per recipient.
DEBOUNCED_PRIORITY = 4
#: Events per webhook request.
WEBHOOK_BATCH = 50
#: Consecutive failed webhook requests that pause a subscription, and for how long.
BREAKER_THRESHOLD = 10
BREAKER_PAUSE_SECONDS = 3600
#: Largest event id / cursor (BIGINT).
MAX_EVENT_ID = 2**63 - 1
