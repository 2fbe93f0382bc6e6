"""Operator sign-in for the console: one-time links, server-side sessions, CSRF tokens.

The pattern is the one of the device-code login (:mod:`app.auth.device.services`): a random
256-bit token travels in a link and only its SHA-256 is stored; spending it is a conditional
``UPDATE … WHERE used_at IS NULL``, so a link works exactly once even under concurrent clicks.
Links are e-mailed with :func:`app.mail.send_mail` (logged when no SMTP server is configured)
or printed by ``flask console login EMAIL``.

Spending a link opens a :class:`~app.console.models.ConsoleSession`: the cookie holds a fresh
random token (never the link's), the table its hash.  A session is accepted only while it is
unexpired, not signed out, and its address is still in ``CONSOLE_ADMINS`` — removing an
operator from the configuration locks them out at their next request.  API credentials (keys,
session JWTs, service keys) are never consulted: the console reads its own cookie only.

CSRF: every form carries an HMAC-SHA256 (keyed by ``SESSION_SECRET``) of what the request is
bound to — the session's token hash once signed in, a random pre-sign-in cookie before — and
:func:`csrf_valid` compares it in constant time.  Services own their transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import delete, select, update

from app.auth.tokens import hash_secret, secrets_equal
from app.console.models import ConsoleLoginLink, ConsoleSession
from app.db import utcnow
from app.errors import BadRequest, NotFound
from app.extensions import db
from app.mail import MailError, send_mail
from config import console_admins

log = logging.getLogger(__name__)

#: How long a sign-in link stays valid (as long as a device-code login link).
LINK_TTL = timedelta(minutes=15)
#: Expired links and sessions are deleted this long after they expire.
RETENTION = timedelta(days=1)
#: The session cookie (path ``/console``) and the cookie binding forms before sign-in.
SESSION_COOKIE = "cueline_console"
PRE_SESSION_COOKIE = "cueline_console_pre"
#: Audit ``principal`` of an operator: service principal names cannot hold a colon.
ACTOR_PREFIX = "console:"


def admin_address(email: str, admins_setting: str) -> str | None:
    """The configured operator address matching ``email`` (case-insensitively), else None."""
    wanted = email.strip().lower()
    for address in console_admins(admins_setting):
        if secrets_equal(wanted, address):
            return address
    return None


def _new_token() -> str:
    return secrets.token_hex(32)


def _prune(now: datetime) -> None:
    cutoff = now - RETENTION
    db.session.execute(delete(ConsoleLoginLink).where(ConsoleLoginLink.expires_at < cutoff))
    db.session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < cutoff))


def link_url(base_url: str, token: str) -> str:
    """Where a sign-in link points: the confirmation page (a GET never signs anyone in, so
    mail scanners that open links cannot spend it)."""
    return f"{base_url.rstrip('/')}/console/login/link?" + urlencode({"token": token})


def issue_login_link(email: str, admins_setting: str, origin: str,
                     now: datetime | None = None) -> str:
    """Store a new one-time link for operator ``email`` and return its token.

    ``origin`` is ``email`` or ``cli``.  Refuses an address that is not in ``CONSOLE_ADMINS``
    with ``404 not_an_operator`` (only the CLI says so; the sign-in page never reveals it).
    """
    now = now or utcnow()
    address = admin_address(email, admins_setting)
    if address is None:
        raise NotFound("not_an_operator", f"{email!r} is not listed in CONSOLE_ADMINS")
    _prune(now)
    token = _new_token()
    db.session.add(ConsoleLoginLink(id=uuid.uuid4(), token_hash=hash_secret(token),
                                    email=address, origin=origin, created_at=now,
                                    expires_at=now + LINK_TTL))
    db.session.commit()
    return token


def request_login_link(email: str, admins_setting: str, base_url: str,
                       now: datetime | None = None) -> bool:
    """The sign-in form: e-mail a link to ``email`` when it names an operator.

    Returns whether a link was sent, for the log only: the page answers the same either way,
    so the form cannot be used to find out who the operators are.  A mail failure is logged.
    """
    try:
        token = issue_login_link(email, admins_setting, "email", now)
    except NotFound:
        log.info("console sign-in requested for an address that is not an operator")
        return False
    address = admin_address(email, admins_setting)
    try:
        send_mail(address, "Your Cueline console sign-in link", _mail_text(
            link_url(base_url, token)))
    except MailError:
        log.error("console sign-in link could not be e-mailed; use flask console login")
        return False
    return True


def _mail_text(link: str) -> str:
    return (
        "Someone (hopefully you) asked to sign in to the Cueline operator console.\n\n"
        "To sign in, open this link within 15 minutes and confirm:\n"
        f"\n{link}\n\n"
        "If you did not ask for it, ignore this message: nothing happens without the link.\n"
    )


def pending_link(token: str, now: datetime | None = None) -> ConsoleLoginLink | None:
    """The unspent, unexpired link with ``token`` (read-only: the confirmation page)."""
    now = now or utcnow()
    if not token or len(token) > 128:
        return None
    link = db.session.scalar(select(ConsoleLoginLink)
                             .where(ConsoleLoginLink.token_hash == hash_secret(token)))
    db.session.rollback()
    if link is None or link.used_at is not None or link.expires_at <= now:
        return None
    return link


@dataclass(frozen=True)
class NewSession:
    """A session just opened and the cookie token that names it (shown to the browser once)."""

    session: ConsoleSession
    token: str


def spend_login_link(token: str, admins_setting: str, hours: int,
                     now: datetime | None = None) -> NewSession:
    """Spend a sign-in link (exactly once) and open a session of ``hours`` for its operator.

    ``400 invalid_link`` for an unknown, used or expired link, or one whose address is no
    longer an operator.
    """
    now = now or utcnow()
    invalid = BadRequest("invalid_link", "This sign-in link is invalid, expired or already "
                                         "used; ask for a new one")
    if not token or len(token) > 128:
        raise invalid
    token_hash = hash_secret(token)
    link = db.session.scalar(select(ConsoleLoginLink)
                             .where(ConsoleLoginLink.token_hash == token_hash))
    if link is None or link.used_at is not None or link.expires_at <= now:
        db.session.rollback()
        raise invalid
    spent = db.session.execute(
        update(ConsoleLoginLink)
        .where(ConsoleLoginLink.id == link.id, ConsoleLoginLink.used_at.is_(None))
        .values(used_at=now)).rowcount == 1
    address = admin_address(link.email, admins_setting)
    if not spent:  # a concurrent click spent it first
        db.session.rollback()
        raise invalid
    if address is None:  # removed from CONSOLE_ADMINS since: the link is spent for nothing
        db.session.commit()
        raise invalid
    cookie = _new_token()
    session = ConsoleSession(id=uuid.uuid4(), token_hash=hash_secret(cookie), email=address,
                             created_at=now, expires_at=now + timedelta(hours=hours))
    db.session.add(session)
    db.session.commit()
    return NewSession(session=session, token=cookie)


def current_session(cookie: str | None, admins_setting: str,
                    now: datetime | None = None) -> ConsoleSession | None:
    """The live session named by the cookie token, or None (never raises for bad input)."""
    if not cookie or len(cookie) != 64:
        return None
    now = now or utcnow()
    session = db.session.scalar(select(ConsoleSession)
                                .where(ConsoleSession.token_hash == hash_secret(cookie)))
    if (session is None or session.revoked_at is not None or session.expires_at <= now
            or admin_address(session.email, admins_setting) is None):
        return None
    return session


def end_session(session_id: uuid.UUID, now: datetime | None = None) -> None:
    """Sign out: the session's cookie is refused from the next request on."""
    db.session.execute(update(ConsoleSession).where(ConsoleSession.id == session_id,
                                                    ConsoleSession.revoked_at.is_(None))
                       .values(revoked_at=now or utcnow()))
    db.session.commit()


def csrf_token(secret: str, binding: str) -> str:
    """The CSRF token of forms bound to ``binding`` (a session's token hash, or the
    pre-sign-in cookie)."""
    return hmac.new(secret.encode("utf-8"), b"console-csrf:" + binding.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def csrf_valid(secret: str, binding: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token for ``binding`` (constant-time)."""
    if not binding or not presented or not secret:
        return False
    return secrets_equal(presented, csrf_token(secret, binding))


def actor(session: ConsoleSession) -> str:
    """The audit trail's name for the operator of ``session``."""
    return ACTOR_PREFIX + session.email
