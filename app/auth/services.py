"""Account credentials: key rotation and reveal, webhook secrets, account edits, invites.

Every function owns its transaction and raises ``AppError`` subclasses.  Plaintext secrets are
returned to the caller exactly once and never stored except as hashes (API keys, invite tokens)
or as signing material the server must use (webhook secrets).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.auth.crypto import decrypt_secret, encrypt_secret
from app.auth.models import Invite, InviteRedemption, RotatedApiKey
from app.auth.tokens import generate_api_key, generate_webhook_secret, hash_secret, key_prefix
from app.db import utcnow, violated_columns
from app.errors import AppError, BadRequest, Conflict, Gone, NotFound, ValidationFailed
from app.extensions import db
from app.outbound.ssrf import validate_url
from app.users.models import User
from app.users.services import NewUser, normalize_email, register_user

#: How long a replaced API key answers ``key_rotated`` instead of ``invalid_api_key``.
ROTATION_NOTICE = timedelta(hours=24)
INVITE_PREFIX = "inv_"


def rotated_key_notice(key_hash: str) -> bool:
    """True when ``key_hash`` belongs to a key replaced within the last 24 hours."""
    rotated_at = db.session.execute(
        select(RotatedApiKey.rotated_at).where(RotatedApiKey.key_hash == key_hash)
    ).scalar_one_or_none()
    return rotated_at is not None and utcnow() - rotated_at < ROTATION_NOTICE


def regenerate_api_key(user: User, session_secret: str) -> str:
    """Replace the user's API key; the old one answers ``key_rotated`` for 24 hours.

    Returns the new key (shown once).  An encrypted copy is kept when ``SESSION_SECRET`` is set,
    so ``GET /v1/auth/key`` can reveal it later.  Expired rotation records are pruned here.

    Concurrent regenerations for one user are serialised on the user's row: the key is replaced
    by a compare-and-swap ``UPDATE … WHERE api_key_hash = <the hash this request saw>``, which
    takes the row lock (PostgreSQL: a second caller waits, then finds the hash changed; SQLite
    serialises writers).  Exactly one caller wins and gets a working key; every other caller
    that saw the same key gets ``409 key_rotation_in_progress`` and nothing changes for it.
    """
    now = utcnow()
    new_key = generate_api_key()
    seen_hash = user.api_key_hash
    swapped = db.session.execute(
        update(User).where(User.id == user.id, User.api_key_hash == seen_hash)
        .values(api_key_hash=hash_secret(new_key), api_key_prefix=key_prefix(new_key),
                api_key_encrypted=encrypt_secret(new_key, session_secret))
        .execution_options(synchronize_session=False)).rowcount == 1
    if not swapped:
        db.session.rollback()
        raise Conflict("key_rotation_in_progress",
                       "Another request replaced this API key at the same moment; use the key "
                       "that request returned (this one was not changed)")
    # The row lock is held from here to the commit, so the rotation record is written once.
    db.session.execute(delete(RotatedApiKey)
                       .where(RotatedApiKey.rotated_at < now - ROTATION_NOTICE))
    db.session.merge(RotatedApiKey(key_hash=seen_hash, user_id=user.id, rotated_at=now))
    db.session.commit()  # expires ``user``: its next read sees the new key
    return new_key


def reveal_api_key(user: User, session_secret: str) -> dict[str, Any]:
    """The body of ``GET /v1/auth/key``: the stored key when it can be decrypted."""
    if not user.api_key_encrypted:
        return {"api_key": None, "prefix": user.api_key_prefix,
                "message": "No copy of this key is stored; regenerate it to get a new one"}
    key = decrypt_secret(user.api_key_encrypted, session_secret)
    if key is None:
        return {"api_key": None, "prefix": user.api_key_prefix,
                "message": "The stored copy cannot be decrypted (SESSION_SECRET changed); "
                           "regenerate the key"}
    return {"api_key": key}


def webhook_secret(user: User) -> str:
    """The user's webhook signing secret or ``404 no_webhook_secret``."""
    if not user.webhook_secret:
        raise NotFound("no_webhook_secret", "This account has no webhook signing secret")
    return user.webhook_secret


def regenerate_webhook_secret(user: User) -> str:
    """Mint a new webhook signing secret; the old one stops signing new deliveries at once."""
    user.webhook_secret = generate_webhook_secret()
    db.session.commit()
    return user.webhook_secret


def update_account(user: User, changes: dict[str, Any]) -> datetime:
    """Apply ``PATCH /v1/auth/me``: e-mail change (409 if taken), alert webhook URL (checked
    like a callback URL → 400 ``invalid_alert_webhook_url``; ``""`` / ``null`` removes it).
    Returns ``updated_at``."""
    if "alert_webhook_url" in changes:
        url = (changes["alert_webhook_url"] or "").strip()
        if url:
            try:
                url = validate_url(url, field="alert_webhook_url")
            except BadRequest as exc:
                raise BadRequest("invalid_alert_webhook_url", exc.message) from None
        user.alert_webhook_url = url or None
    if "email" in changes:
        user.email = normalize_email(changes["email"])
    user.updated_at = utcnow()
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        if "users.email" in violated_columns(exc):
            raise Conflict("duplicate_email", "A user with this email already exists") from None
        raise
    return user.updated_at


# ---------------------------------------------------------------------------------------------
# Invites


@dataclass(frozen=True)
class NewInvite:
    """An invite and its token, shown to its creator exactly once."""

    invite: Invite
    token: str


def create_invite(created_by: str, *, max_uses: int | None = 1,
                  expires_at: datetime | None = None, email: str | None = None,
                  note: str | None = None, owner: str | None = None) -> NewInvite:
    """Mint an invite token (single-use by default; ``max_uses=None`` = unlimited).

    ``owner``: the owner tag of an owner-bound principal minting it; only principals bound to
    that owner (and unbound ones) see or revoke it, and whoever redeems it gets that
    ``external_owner``.
    """
    if max_uses is not None and max_uses < 1:
        raise BadRequest("invalid_max_uses", "max_uses must be at least 1 (or null for unlimited)")
    if expires_at is not None and expires_at <= utcnow():
        raise BadRequest("invalid_expiry", "expires_at must be in the future")
    token = INVITE_PREFIX + secrets.token_hex(16)
    invite = Invite(id=uuid.uuid4(), token_hash=hash_secret(token), token_prefix=key_prefix(token),
                    email=normalize_email(email) if email else None, max_uses=max_uses, uses=0,
                    expires_at=expires_at, created_by=created_by, owner=owner, note=note,
                    created_at=utcnow())
    db.session.add(invite)
    db.session.commit()
    return NewInvite(invite=invite, token=token)


def list_invites(owner: str | None = None) -> list[tuple[Invite, list[InviteRedemption]]]:
    """Every invite (of ``owner`` when given), newest first, with who redeemed it."""
    query = select(Invite).order_by(Invite.created_at.desc())
    redeemed = select(InviteRedemption).order_by(InviteRedemption.redeemed_at)
    if owner is not None:
        query = query.where(Invite.owner == owner)
        redeemed = redeemed.join(Invite, Invite.id == InviteRedemption.invite_id).where(
            Invite.owner == owner)
    invites = db.session.scalars(query).all()
    redemptions = db.session.scalars(redeemed).all()
    by_invite: dict[uuid.UUID, list[InviteRedemption]] = {}
    for redemption in redemptions:
        by_invite.setdefault(redemption.invite_id, []).append(redemption)
    return [(invite, by_invite.get(invite.id, [])) for invite in invites]


def revoke_invite(invite_id: uuid.UUID, owner: str | None = None) -> None:
    """Revoke an invite (idempotent); unknown → ``404 invite_not_found``.

    With ``owner``, another owner's invite (or one of no owner) answers exactly like an unknown
    one.
    """
    invite = db.session.get(Invite, invite_id)
    if invite is None or (owner is not None and invite.owner != owner):
        raise NotFound("invite_not_found", "No such invite")
    if invite.revoked_at is None:
        invite.revoked_at = utcnow()
        db.session.commit()


def _invite_refusal(token_hash: str) -> AppError:
    """Why an invite could not be consumed (read after the conditional update failed)."""
    invite = db.session.execute(select(Invite).where(Invite.token_hash == token_hash)
                                ).scalar_one_or_none()
    if invite is None:
        return NotFound("invite_not_found", "This invite token does not exist")
    if invite.revoked_at is not None:
        return Gone("invite_revoked", "This invite has been revoked")
    if invite.expires_at is not None and invite.expires_at <= utcnow():
        return Gone("invite_expired", "This invite has expired")
    return Gone("invite_exhausted", "This invite has already been used")


def register_with_invite(email: str | None, token: str) -> NewUser:
    """Create a user by redeeming an invite, race-safely.

    The invite's use counter is incremented by one conditional ``UPDATE`` in the same
    transaction that inserts the user, so two parallel redemptions of a single-use invite create
    exactly one user, and a failed registration (duplicate e-mail) consumes nothing.
    """
    token_hash = hash_secret(token)
    invite = db.session.execute(select(Invite).where(Invite.token_hash == token_hash)
                                ).scalar_one_or_none()
    if invite is None:
        raise NotFound("invite_not_found", "This invite token does not exist")
    if invite.email:
        if email and normalize_email(email) != invite.email:
            raise BadRequest("invite_email_mismatch",
                             "This invite is for a different e-mail address")
        email = invite.email
    if not email:
        raise ValidationFailed([{"field": "body.email",
                                 "message": "Missing data for required field."}])

    def consume(user: User) -> None:
        now = utcnow()
        result = db.session.execute(
            update(Invite)
            .where(Invite.token_hash == token_hash, Invite.revoked_at.is_(None),
                   (Invite.max_uses.is_(None)) | (Invite.uses < Invite.max_uses),
                   (Invite.expires_at.is_(None)) | (Invite.expires_at > now))
            .values(uses=Invite.uses + 1)
        )
        if result.rowcount != 1:
            db.session.rollback()
            raise _invite_refusal(token_hash)
        db.session.add(InviteRedemption(id=uuid.uuid4(), invite_id=invite.id, user_id=user.id,
                                        redeemed_at=now))
        if invite.owner is not None:
            # Invited by an owner-bound principal: the user is that owner's, as if upserted.
            user.external_owner = invite.owner

    return register_user(email, in_transaction=consume)
