"""Session tokens (wire protocol §4.6–4.7): the one-time exchange after a device-code login,
and refresh.

The one-time token is minted by :func:`app.auth.device.services.poll_device_code` and stored only
as its SHA-256 hash; spending it is a conditional ``UPDATE``, so it works exactly once even under
concurrent requests.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from app.auth.device.models import APPROVED, CLAIMED, DeviceCode
from app.auth.tokens import SessionError, hash_secret, issue_session_token
from app.db import utcnow
from app.errors import ServiceUnavailable, Unauthorized
from app.extensions import db
from app.users.models import User


def exchange_session_token(token: str, *, secret: str,
                           now: datetime | None = None) -> dict[str, str]:
    """Spend a one-time session token from an approved device code on a 24 h session JWT.

    ``503 session_unavailable`` without ``SESSION_SECRET`` (the token is not spent);
    ``401 invalid_token`` for an unknown, spent or expired token; ``401 user_not_found`` when
    the user was deleted.
    """
    now = now or utcnow()
    if not secret:
        raise ServiceUnavailable("session_unavailable",
                                 "Sessions are not configured on this server (SESSION_SECRET)")
    token_hash = hash_secret(token)
    row = db.session.execute(
        select(DeviceCode).where(DeviceCode.session_token_hash == token_hash,
                                 DeviceCode.status.in_((APPROVED, CLAIMED)))
    ).scalar_one_or_none()
    invalid = Unauthorized("invalid_token", "Invalid, expired or already used session token")
    if row is None:
        raise invalid
    expired = row.session_expires_at is None or row.session_expires_at <= now
    spent = db.session.execute(
        update(DeviceCode)
        .where(DeviceCode.id == row.id, DeviceCode.session_token_hash == token_hash)
        .values(session_token_hash=None, session_expires_at=None)
    ).rowcount == 1
    user_id = row.user_id
    db.session.commit()
    if expired or not spent:
        raise invalid
    user = db.session.get(User, user_id) if user_id else None
    if user is None:
        raise Unauthorized("user_not_found", "The account for this login no longer exists")
    return {"session_token": issue_session_token(str(user.id), user.email, secret, now),
            "email": user.email}


def refresh_session(user: User, *, secret: str, now: datetime | None = None,
                    minted_by: str | None = None) -> dict[str, str]:
    """A new 24 h session JWT for ``user``; ``503 session_unavailable`` without a secret.

    ``minted_by``: the service principal behind the request (acting now, or recorded in the
    session being refreshed); the new session records it and dies with it.
    """
    try:
        token = issue_session_token(str(user.id), user.email, secret, now or utcnow(),
                                    minted_by=minted_by)
    except SessionError as exc:
        raise ServiceUnavailable(exc.code, exc.message) from None
    return {"session_token": token, "email": user.email}
