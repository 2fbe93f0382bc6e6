"""Verify the signature on requests Cueline sends to you (cue webhooks, message pushes, …).

Each signed request carries ``X-CueAPI-Timestamp: <unix seconds>`` and
``X-CueAPI-Signature: v1=<hex>``, where the hex is HMAC-SHA256, keyed with the secret's UTF-8
bytes (``whsec_`` prefix included), over ``"<timestamp>." + canonical_json(body)``.
``canonical_json`` is ``json.dumps(obj, sort_keys=True, default=str)``: sorted keys, ``", "`` and
``": "`` separators, non-ASCII escaped.

    from cueline.webhooks import verify_webhook

    ok = verify_webhook(request.get_data(), request.headers["X-CueAPI-Signature"],
                        secret, request.headers["X-CueAPI-Timestamp"])

The raw body is accepted as signed, and so is its canonical re-serialisation (some senders write
the body with ``ensure_ascii=False``).  Comparison is constant-time; timestamps further than
``tolerance`` seconds from now are rejected, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "X-CueAPI-Signature"
TIMESTAMP_HEADER = "X-CueAPI-Timestamp"
DEFAULT_TOLERANCE = 300

Payload = bytes | bytearray | str | dict | list


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh delivery; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def canonical_json(obj: Any) -> str:
    """The exact serialisation that is signed."""
    return json.dumps(obj, sort_keys=True, default=str)


def compute_signature(secret: str, timestamp: int | str, body: str | bytes) -> str:
    """``v1=<hex>`` for ``body`` (already serialised) at ``timestamp``."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    message = str(timestamp).encode("ascii") + b"." + bytes(body)
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_payload(payload: Any, secret: str, timestamp: int | None = None) -> dict:
    """Headers signing ``payload`` the way the server does (useful in receiver tests)."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: compute_signature(secret, timestamp, canonical_json(payload))}


def _candidates(payload: Payload) -> list[bytes]:
    """The byte strings that count as "the body": raw as received, and canonical."""
    if isinstance(payload, (dict, list)):
        return [canonical_json(payload).encode("utf-8")]
    raw = bytes(payload) if isinstance(payload, (bytes, bytearray)) else payload.encode("utf-8")
    bodies = [raw]
    try:
        canonical = canonical_json(json.loads(raw.decode("utf-8"))).encode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return bodies
    if canonical != raw:
        bodies.append(canonical)
    return bodies


def _signatures(header: str) -> list[str]:
    """The ``v1=`` hex digests in a signature header (several are allowed, comma-separated)."""
    found = []
    for part in header.replace(" ", ",").split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1" and value:
            found.append(value.strip().lower())
    return found


def construct_event(payload: Payload, signature: str | None, secret: str,
                    timestamp: str | int | None, *,
                    tolerance: float | None = DEFAULT_TOLERANCE,
                    now: float | None = None) -> Any:
    """Verify a delivery and return its decoded JSON body, or raise
    :class:`WebhookVerificationError`.  ``tolerance=None`` skips the freshness check (only for
    replaying stored deliveries you already trust)."""
    if not secret:
        raise WebhookVerificationError("no secret configured")
    if not signature:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
    if timestamp is None or str(timestamp).strip() == "":
        raise WebhookVerificationError(f"missing {TIMESTAMP_HEADER} header")
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        raise WebhookVerificationError("timestamp is not an integer") from None
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - ts) > tolerance:
            raise WebhookVerificationError("timestamp outside the tolerance window")
    presented = _signatures(signature)
    if not presented:
        raise WebhookVerificationError("no v1= signature in the header")
    bodies = _candidates(payload)
    for body in bodies:
        expected = compute_signature(secret, ts, body)[3:]
        # Check every presented signature without stopping early on a mismatch.
        if any(hmac.compare_digest(expected, sig) for sig in presented):
            if isinstance(payload, (dict, list)):
                return payload
            try:
                return json.loads(bodies[0].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise WebhookVerificationError("body is not JSON") from None
    raise WebhookVerificationError("signature does not match")


def verify_webhook(payload: Payload, signature: str | None, secret: str,
                   timestamp: str | int | None, tolerance: float | None =
                   DEFAULT_TOLERANCE, *, now: float | None = None) -> bool:
    """True when ``payload`` was signed with ``secret`` at a timestamp within ``tolerance``
    seconds of now.  Same arguments as the CueAPI SDK's ``verify_webhook``."""
    try:
        construct_event(payload, signature, secret, timestamp, tolerance=tolerance, now=now)
    except WebhookVerificationError:
        return False
    return True
