"""Webhook signing (wire protocol §13.1), shared by cue delivery and message push.

API:

``canonical_json(obj) -> str``
    The exact bytes to send as the request body: ``json.dumps(obj, sort_keys=True,
    default=str)`` — keys sorted recursively, separators ``", "`` / ``": "``, non-ASCII as
    ``\\u`` escapes (four hex digits).  The ``cueapi-sdk`` ``verify_webhook`` re-serialises
    the parsed body this way before comparing, so any other spelling breaks verification.

``signature_headers(secret, body_str, now) -> dict``
    ``{"X-CueAPI-Timestamp": "<unix seconds>", "X-CueAPI-Signature": "v1=<hex>"}`` where the hex
    is HMAC-SHA256 keyed with the secret's UTF-8 bytes (``whsec_`` prefix included) over
    ``"<timestamp>." + body_str``.  ``now`` is a datetime or epoch seconds (callers pass their
    clock so tests control it).

``verify_signature(secret, body_str, timestamp, signature) -> bool``
    The receiver-side check in constant time (used by tests and documented for receivers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from app.auth.tokens import secrets_equal

SIGNATURE_VERSION = "v1"


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` exactly as CueAPI signs it (see module docstring)."""
    return json.dumps(obj, sort_keys=True, default=str)


def _epoch(now: datetime | float) -> int:
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


def compute_signature(secret: str, body_str: str, timestamp: int) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    message = f"{timestamp}.{body_str}".encode()
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signature_headers(secret: str, body_str: str, now: datetime | float) -> dict[str, str]:
    """The two signature headers for ``body_str`` signed at ``now``."""
    timestamp = _epoch(now)
    return {
        "X-CueAPI-Timestamp": str(timestamp),
        "X-CueAPI-Signature": compute_signature(secret, body_str, timestamp),
    }


def verify_signature(secret: str, body_str: str, timestamp: str | int, signature: str) -> bool:
    """True when ``signature`` is the v1 signature of ``body_str`` at ``timestamp``."""
    try:
        expected = compute_signature(secret, body_str, int(timestamp))
    except (TypeError, ValueError):
        return False
    return secrets_equal(signature or "", expected)
