"""Business rules of device-code login (wire protocol §5); the session exchange is in ``sessions``.

Every state change is a conditional ``UPDATE … WHERE status = <expected>``, so two concurrent
requests can never both approve a code or both claim its key: the loser sees zero rows
changed.  Tokens are 32 random bytes in hex, stored only as SHA-256 hashes.
Each function takes ``now`` (default: :func:`app.db.utcnow`) so expiry is testable.
"""

from __future__ import annotations

import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.auth.crypto import decrypt_secret, encrypt_secret
from app.auth.device.models import (
    APPROVED,
    CLAIMED,
    EMAIL_SENT,
    EXPIRED,
    PENDING,
    DeviceCode,
)
from app.auth.tokens import (
    generate_api_key,
    hash_secret,
    key_prefix,
    secrets_equal,
)
from app.db import utcnow
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from app.extensions import db
from app.mail import MailError, send_mail
from app.users.models import User
from app.users.services import normalize_email, register_user

#: Lifetime of a device code (``expires_in``) and of the one-time session token it yields.
DEVICE_CODE_TTL = timedelta(seconds=900)
SESSION_TOKEN_TTL = timedelta(seconds=900)
#: Finished or abandoned rows are deleted this long after they expire.
RETENTION = timedelta(days=1)
CODE_MIN, CODE_MAX = 6, 128


def _new_token() -> str:
    return secrets.token_hex(32)


def _find(code: str) -> DeviceCode | None:
    return db.session.execute(
        select(DeviceCode).where(DeviceCode.device_code == code)).scalar_one_or_none()


def _is_expired(row: DeviceCode, now: datetime) -> bool:
    return row.status == EXPIRED or row.expires_at <= now


def _transition(row_id: uuid.UUID, expected: str, *conditions: Any, **values: Any) -> bool:
    """Move a row out of ``expected`` (and ``conditions``); False if another request won."""
    result = db.session.execute(
        update(DeviceCode)
        .where(DeviceCode.id == row_id, DeviceCode.status == expected, *conditions)
        .values(**values)
    )
    return result.rowcount == 1


def _expire(row: DeviceCode) -> None:
    """Mark ``row`` expired for good, dropping any key or link still waiting in it."""
    db.session.execute(
        update(DeviceCode).where(DeviceCode.id == row.id)
        .values(status=EXPIRED, pending_api_key_encrypted=None, verification_token_hash=None)
    )
    db.session.commit()


def create_device_code(code: str, base_url: str, now: datetime | None = None) -> dict[str, Any]:
    """Register a device code chosen by the CLI and return where its user approves it.

    A code still in use (unexpired, not claimed) answers ``409 device_code_exists``; an expired
    or claimed one is replaced.  Codes must be 6–128 printable characters, else
    ``400 invalid_device_code``.  Rows expired for more than a day are deleted on the way.
    """
    now = now or utcnow()
    if not CODE_MIN <= len(code) <= CODE_MAX or any(
            unicodedata.category(ch).startswith("C") for ch in code):
        raise BadRequest("invalid_device_code",
                         f"device_code must be {CODE_MIN} to {CODE_MAX} printable characters")
    db.session.execute(delete(DeviceCode).where(DeviceCode.expires_at < now - RETENTION))
    row = _find(code)
    if row is not None:
        if row.status != CLAIMED and not _is_expired(row, now):
            db.session.rollback()
            raise Conflict("device_code_exists",
                           "This device code is already in use; choose another one")
        db.session.delete(row)
        db.session.flush()
    db.session.add(DeviceCode(id=uuid.uuid4(), device_code=code, status=PENDING,
                              created_at=now, expires_at=now + DEVICE_CODE_TTL))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent request registered the same code first
        raise Conflict("device_code_exists",
                       "This device code is already in use; choose another one") from None
    return {"verification_url": f"{base_url.rstrip('/')}/auth/device?code={quote(code, safe='')}",
            "expires_in": int(DEVICE_CODE_TTL.total_seconds())}


def device_page_state(code: str, now: datetime | None = None) -> str:
    """The status of ``code`` as the approval page presents it: a row status or ``unknown``.

    Read-only, and deliberately without the submitted e-mail: knowing a code must not reveal
    whose address it was sent to.
    """
    now = now or utcnow()
    row = _find(code) if code else None
    if row is None:
        return "unknown"
    return EXPIRED if _is_expired(row, now) else row.status


def submit_email(code: str, email: str, base_url: str, now: datetime | None = None) -> dict:
    """Record the e-mail for a pending code and mail it a one-time magic link.

    ``404 device_code_not_found``, ``400 device_code_expired``, ``400 invalid_status`` (the code
    is past ``pending``).  If the mail cannot be sent the code goes back to ``pending`` and the
    call answers ``503 email_unavailable``, so the user can simply try again.
    """
    now = now or utcnow()
    row = _find(code)
    if row is None:
        raise NotFound("device_code_not_found", "No such device code; run the login again")
    if _is_expired(row, now):
        if row.status != EXPIRED:
            _expire(row)
        raise BadRequest("device_code_expired", "This device code has expired; run the login again")
    if row.status != PENDING:
        raise BadRequest("invalid_status",
                         f"An e-mail was already submitted for this code (status {row.status})")
    email = normalize_email(email)
    token = _new_token()
    token_hash = hash_secret(token)
    if not _transition(row.id, PENDING, status=EMAIL_SENT, email=email,
                       verification_token_hash=token_hash):
        db.session.rollback()
        raise BadRequest("invalid_status", "An e-mail was already submitted for this code")
    db.session.commit()
    link = (f"{base_url.rstrip('/')}/v1/auth/verify?"
            + urlencode({"token": token, "device_code": code}))
    try:
        send_mail(email, "Your Cueline login link", _login_mail_text(link, code))
    except MailError:
        db.session.execute(
            update(DeviceCode)
            .where(DeviceCode.id == row.id, DeviceCode.verification_token_hash == token_hash)
            .values(status=PENDING, email=None, verification_token_hash=None))
        db.session.commit()
        raise ServiceUnavailable("email_unavailable",
                                 "The login e-mail could not be sent; try again shortly") from None
    return {"status": EMAIL_SENT}


def _login_mail_text(link: str, code: str) -> str:
    return (
        "Someone (hopefully you) is logging in to Cueline from a terminal showing the code\n"
        f"\n    {code}\n\n"
        "To approve that login, open this link within 15 minutes:\n"
        f"\n{link}\n\n"
        "If you did not start a login, ignore this message: nothing happens without the link.\n"
    )


class VerificationFailed(AppError):
    """The magic link cannot approve its code (rendered as an HTML page, not JSON)."""

    status = 400


@dataclass(frozen=True)
class Approval:
    email: str
    new_user: bool


def verify_device_code(code: str, token: str, *, secret: str, allow_signup: bool,
                       now: datetime | None = None) -> Approval:
    """Approve ``code`` with the magic-link ``token``; create the user if the e-mail is new.

    An existing user keeps their key.  A new user gets a key (Fernet-encrypted with
    ``secret`` into ``users.api_key_encrypted``, and into the row until the CLI's poll claims
    it), a webhook secret and a slug.  With ``allow_signup`` false an unknown e-mail is refused
    (``403 registration_closed``) and the code expires.  Raises :class:`VerificationFailed` (or
    another ``AppError``) with a reason the page shows.
    """
    now = now or utcnow()
    if not code or not token:
        raise VerificationFailed("invalid_link", "This login link is incomplete; open the link "
                                                 "from the e-mail exactly as it was sent")
    row = _find(code)
    if row is None:
        raise VerificationFailed("device_code_not_found",
                                 "This login is unknown; run the login from your terminal again")
    if _is_expired(row, now):
        if row.status != EXPIRED:
            _expire(row)
        raise VerificationFailed("device_code_expired",
                                 "This login link has expired; run the login again")
    if row.status != EMAIL_SENT or not row.verification_token_hash:
        raise VerificationFailed("invalid_status", "This login link has already been used")
    token_hash = row.verification_token_hash
    if not secrets_equal(hash_secret(token), token_hash):
        raise VerificationFailed("invalid_token", "This login link is not valid")

    user = _user_by_email(row.email)
    pending_key, created = None, False
    if user is None:
        if not allow_signup:
            _expire(row)
            raise Forbidden("registration_closed",
                            "There is no account for this e-mail and sign-up is closed on this "
                            "server; ask its administrator for an account")
        try:
            new = register_user(row.email)
        except Conflict as exc:
            if exc.code != "duplicate_email":
                raise
            user = _user_by_email(row.email)  # a concurrent verification created it
        else:
            user, created = new.user, True
            pending_key = encrypt_secret(new.api_key, secret)
            user.api_key_encrypted = pending_key
    approved = _transition(
        row.id, EMAIL_SENT, DeviceCode.verification_token_hash == token_hash,
        status=APPROVED, verification_token_hash=None, user_id=user.id,
        new_user=created,
        pending_api_key_encrypted=pending_key, approved_at=now)
    email = user.email
    db.session.commit()
    if not approved:
        raise VerificationFailed("invalid_status", "This login link has already been used")
    return Approval(email=email, new_user=created)


def _user_by_email(email: str | None) -> User | None:
    if not email:
        return None
    return db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()


def poll_device_code(code: str, *, secret: str, now: datetime | None = None) -> dict[str, Any]:
    """What the CLI sees when it polls ``code`` (always a body; never an error).

    Unknown or past expiry → ``expired``; ``pending`` / ``email_sent`` while waiting;
    ``approved`` exactly once — with the new user's key, or an existing user's revealable key,
    or ``existing_user: true`` — plus a one-time session token; ``claimed`` afterwards.  The
    waiting key copy is wiped by the claim.  If it cannot be decrypted (``SESSION_SECRET`` unset
    or changed since verification) the new user is given a fresh key instead.
    """
    now = now or utcnow()
    row = _find(code)
    if row is None:
        return {"status": EXPIRED}
    if _is_expired(row, now):
        if row.status != EXPIRED:
            _expire(row)
        return {"status": EXPIRED}
    if row.status != APPROVED:
        return {"status": row.status}
    session_token = _new_token()
    pending, new_user, user_id = row.pending_api_key_encrypted, row.new_user, row.user_id
    if not _transition(row.id, APPROVED, status=CLAIMED, pending_api_key_encrypted=None,
                       session_token_hash=hash_secret(session_token),
                       session_expires_at=now + SESSION_TOKEN_TTL, claimed_at=now):
        db.session.rollback()
        return {"status": CLAIMED}  # a concurrent poll claimed it
    user = db.session.get(User, user_id) if user_id else None
    if user is None:  # deleted between approval and claim: nothing to log in to
        db.session.commit()
        return {"status": EXPIRED}
    body: dict[str, Any] = {"status": APPROVED, "email": user.email,
                            "session_token": session_token}
    if new_user:
        api_key = decrypt_secret(pending, secret)
        if api_key is None:
            api_key = generate_api_key()
            user.api_key_hash = hash_secret(api_key)
            user.api_key_prefix = key_prefix(api_key)
            user.api_key_encrypted = encrypt_secret(api_key, secret)
        body["api_key"] = api_key
    else:
        api_key = decrypt_secret(user.api_key_encrypted, secret)
        if api_key is not None:
            body["api_key"] = api_key
        else:
            body["existing_user"] = True
    db.session.commit()
    return body
