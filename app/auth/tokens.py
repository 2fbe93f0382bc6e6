"""Secret material: API keys, webhook secrets, session JWTs, hashing and comparison.

API keys are stored only as a SHA-256 hash plus their first 12 characters (for display).
Every comparison of a presented secret with a known one goes through :func:`secrets_equal`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt

API_KEY_PREFIX = "cue_sk_"
KEY_DISPLAY_LENGTH = 12
WEBHOOK_SECRET_PREFIX = "whsec_"
SESSION_TTL = timedelta(hours=24)
SESSION_ALGORITHM = "HS256"


def generate_api_key() -> str:
    """A new per-user key: ``cue_sk_`` + 32 lowercase hex characters."""
    return API_KEY_PREFIX + secrets.token_hex(16)


def generate_webhook_secret() -> str:
    """A new signing secret: ``whsec_`` + 64 lowercase hex characters."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_hex(32)


def hash_secret(value: str) -> str:
    """SHA-256 hex digest of a secret (what the database stores)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def key_prefix(api_key: str) -> str:
    """The displayable prefix of an API key."""
    return api_key[:KEY_DISPLAY_LENGTH]


def secrets_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected secret never matches."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


class SessionError(Exception):
    """A session token could not be accepted; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


#: Claim naming the service principal a delegated session was minted by (its id, or ``env``).
MINTED_BY_CLAIM = "prn"


def issue_session_token(user_id: str, email: str, secret: str, now: datetime,
                        ttl: timedelta = SESSION_TTL, minted_by: str | None = None) -> str:
    """Mint an HS256 session JWT (claims ``sub``, ``email``, ``type``, ``iat``, ``exp``).

    ``minted_by``: the service principal that minted it under delegation (a principal id, or
    ``env``), recorded as claim ``prn`` so the session dies with that principal.
    """
    if not secret:
        raise SessionError("session_unavailable", "Sessions are not configured (SESSION_SECRET)")
    claims = {"sub": str(user_id), "email": email, "type": "session",
              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp())}
    if minted_by is not None:
        claims[MINTED_BY_CLAIM] = str(minted_by)
    return jwt.encode(claims, secret, algorithm=SESSION_ALGORITHM)


def decode_session_token(token: str, secret: str) -> dict[str, Any]:
    """Verify a session JWT and return its claims, or raise :class:`SessionError`."""
    if not secret:
        raise SessionError("invalid_session", "Invalid session token")
    try:
        claims = jwt.decode(token, secret, algorithms=[SESSION_ALGORITHM],
                            options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise SessionError("session_expired", "Session token has expired; log in again") from None
    except jwt.PyJWTError:
        raise SessionError("invalid_session", "Invalid session token") from None
    if claims.get("type") != "session":
        raise SessionError("invalid_session", "Invalid session token")
    return claims
