"""User business rules: registration, slug derivation, and the integrators' idempotent upsert.

Services own their transaction (commit or roll back before returning) and raise ``AppError``
subclasses; they never touch ``flask.request``.
"""

from __future__ import annotations

import functools
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from app.auth.tokens import generate_api_key, generate_webhook_secret, hash_secret, key_prefix
from app.db import (commit_keeping_state, dialect_name, fetch_one_direct, utcnow,
                    violated_columns)
from app.errors import AppError, Conflict, NotFound
from app.extensions import db
from app.users.models import (
    DEFAULT_ACTIVE_CUE_LIMIT,
    DEFAULT_MONTHLY_EXECUTION_LIMIT,
    DEFAULT_MONTHLY_MESSAGE_LIMIT,
    DEFAULT_PLAN,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    User,
)

SLUG_MAX = 60
_NON_SLUG = re.compile(r"[^a-z0-9]+")
_SLUG_ATTEMPTS = 5


def normalize_email(email: str) -> str:
    """Trim the address and lower-case its domain (the local part is case-sensitive)."""
    email = email.strip()
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}" if local else email


def base_slug(text: str, fallback: str = "user") -> str:
    """Lower-case ``text``, collapse runs of other characters to ``-``, trim, cap at 60."""
    slug = _NON_SLUG.sub("-", text.lower()).strip("-")[:SLUG_MAX].strip("-")
    return slug or fallback


def _slug_taken(slug: str) -> bool:
    return db.session.execute(select(User.id).where(User.slug == slug)).first() is not None


def derive_user_slug(email: str) -> str:
    """A free slug from the e-mail's local part; collisions get ``-xxxx`` (then ``-xxxxxxxx``)."""
    base = base_slug(email.rpartition("@")[0] or email)
    if not _slug_taken(base):
        return base
    for _ in range(_SLUG_ATTEMPTS):
        candidate = f"{base}-{secrets.token_hex(2)}"
        if not _slug_taken(candidate):
            return candidate
    return f"{base}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class NewUser:
    """A freshly registered user and the plaintext key shown to them exactly once."""

    user: User
    api_key: str


def register_user(email: str,
                  in_transaction: Callable[[User], None] | None = None) -> NewUser:
    """Create a user with default limits, a fresh API key and webhook secret.

    ``in_transaction(user)`` runs after the user is added and before the commit, in the same
    transaction (e.g. consuming an invite): if it raises, nothing is written.  Raises
    ``Conflict('duplicate_email')`` when the address is taken (also under a race, via the
    unique constraint).
    """
    email = normalize_email(email)
    if db.session.execute(select(User.id).where(User.email == email)).first():
        raise Conflict("duplicate_email", "A user with this email already exists")
    for _attempt in range(3):
        api_key = generate_api_key()
        user = User(
            id=uuid.uuid4(), email=email, slug=derive_user_slug(email),
            api_key_hash=hash_secret(api_key), api_key_prefix=key_prefix(api_key),
            webhook_secret=generate_webhook_secret(),
        )
        db.session.add(user)
        try:
            if in_transaction is not None:
                db.session.flush()
                in_transaction(user)
            db.session.commit()
            return NewUser(user=user, api_key=api_key)
        except AppError:
            db.session.rollback()
            raise
        except IntegrityError as exc:
            db.session.rollback()
            if "users.email" in violated_columns(exc):
                raise Conflict("duplicate_email", "A user with this email already exists") from None
            # A concurrent registration took the derived slug: derive again.
    raise Conflict("slug_taken", "Could not allocate a unique slug; retry")


def get_user(user_id: uuid.UUID) -> User:
    """The user with ``user_id`` or ``NotFound('user_not_found')``."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", f"No user with id {user_id}")
    return user


#: Fields of the upsert body that keep their stored value when omitted or null.
OPTIONAL_UPSERT_FIELDS = {
    "plan": DEFAULT_PLAN,
    "active_cue_limit": DEFAULT_ACTIVE_CUE_LIMIT,
    "monthly_execution_limit": DEFAULT_MONTHLY_EXECUTION_LIMIT,
    "monthly_message_limit": DEFAULT_MONTHLY_MESSAGE_LIMIT,
    "rate_limit_per_minute": DEFAULT_RATE_LIMIT_PER_MINUTE,
    "external_owner": None,
}


#: Tries of one upsert: a race with a concurrent upsert of the same new id costs one more.
_UPSERT_ATTEMPTS = 3


def _identity_conflict(user_id: uuid.UUID, email: str, slug: str) -> Conflict | None:
    """The 409 for an upsert refused by a unique constraint when another user holds the email
    or slug (``email_taken`` before ``slug_taken`` when they hold both: the database names only
    one), or None when no other user does."""
    holders = db.session.execute(
        select(User.email, User.slug).where(
            User.id != user_id, (User.email == email) | (User.slug == slug)
        )
    ).all()
    if any(row.email == email for row in holders):
        return Conflict("email_taken", "Another user already has this email")
    if holders:
        return Conflict("slug_taken", "Another user already has this slug")
    return None


def _conflict_from(exc: IntegrityError) -> Conflict:
    columns = violated_columns(exc)
    if "users.email" in columns:
        return Conflict("email_taken", "Another user already has this email")
    if "users.slug" in columns:
        return Conflict("slug_taken", "Another user already has this slug")
    raise exc


class OwnerConflict(Conflict):
    """The user belongs to another owner than the calling principal's."""

    def __init__(self):
        super().__init__("user_owned_by_another_owner",
                         "This user id belongs to another owner; a principal bound to an owner "
                         "can only manage that owner's users")


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, changed: tuple[str, ...], owner_bound: bool):
    """The upsert for one shape of request (which optional fields it sets, whether the caller
    is owner-bound), built once: building a statement costs more than running it.

    Parameters: ``new_<column>`` for every inserted column (an update sets email, slug,
    ``updated_at`` and the ``changed`` fields from the same values), ``owner`` when bound.
    """
    table = User.__table__
    columns = (*OPTIONAL_UPSERT_FIELDS, "active", "id", "email", "slug", "api_key_hash",
               "api_key_prefix", "webhook_secret", "created_at", "updated_at")
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(table).values(
        {name: bindparam(f"new_{name}") for name in dict.fromkeys(columns)})
    updated = ("email", "slug", "updated_at", *changed)
    return insert.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={name: insert.excluded[name] for name in updated},
        where=(table.c.external_owner == bindparam("owner")) if owner_bound else None,
    ).returning(*table.c)


def upsert_internal_user(user_id: uuid.UUID, data: dict[str, Any],
                         owner: str | None = None) -> tuple[Any, bool]:
    """Create or update the user ``user_id`` as an integrator describes it; idempotent.

    ``email`` and ``slug`` are always overwritten; the optional fields (including ``active``)
    change only when given and non-null (on insert they take the defaults).  A new user gets a
    random API key that is never revealed (the integrator acts for them by delegation) and a
    fresh webhook secret.  Returns ``(row, created)``, ``row`` being the user's ``users`` row as
    written; exactly one of any number of concurrent calls for a new id sees ``created=True``.
    An email or slug held by another user → 409, nothing changed.

    ``owner`` is the calling principal's owner tag: when set, ``external_owner`` is stamped from
    it (the body's value is ignored) and an existing user of any other owner (or of none) is
    refused with 409 ``user_owned_by_another_owner``.
    """
    email = normalize_email(data["email"])
    slug = data["slug"]
    given = {k: data[k] for k in OPTIONAL_UPSERT_FIELDS if data.get(k) is not None}
    if owner is not None:
        given["external_owner"] = owner
    if data.get("active") is not None:
        given["active"] = data["active"]
    now = utcnow()
    stub_key = generate_api_key()
    stub_hash = hash_secret(stub_key)
    insert_values = {
        **OPTIONAL_UPSERT_FIELDS, "active": True, **given,
        "id": user_id, "email": email, "slug": slug,
        "api_key_hash": stub_hash, "api_key_prefix": key_prefix(stub_key),
        "webhook_secret": generate_webhook_secret(), "created_at": now, "updated_at": now,
    }
    # One statement inserts or updates and answers with the row, so the write is atomic on
    # its own.  An owner-bound principal only updates its owner's users: atomic with the write,
    # no window for another owner's user to be taken over.
    statement = _upsert_statement(dialect_name(), tuple(sorted(given)), owner is not None)
    params = {f"new_{name}": value for name, value in insert_values.items()}
    if owner is not None:
        params["owner"] = owner
    for attempt in range(_UPSERT_ATTEMPTS):
        try:
            user = fetch_one_direct(statement, params)
            if user is None:
                raise OwnerConflict()
            commit_keeping_state()
            break
        except IntegrityError as exc:
            db.session.rollback()
            conflict = _identity_conflict(user_id, email, slug)
            if conflict is not None:
                raise conflict from None
            if attempt == _UPSERT_ATTEMPTS - 1:
                raise _conflict_from(exc) from None
            # Nobody else holds the email or slug: a concurrent upsert of this same new id
            # inserted it first, and PostgreSQL reports that on the email or slug index rather
            # than resolving it through ON CONFLICT (id).  The row exists now: run it again.
        except AppError:
            db.session.rollback()
            raise
    # The insert stored this request's fresh stub key; an update keeps the stored one.
    created = user.api_key_hash == stub_hash
    return user, created


def get_internal_user(user_id: uuid.UUID, owner: str | None = None) -> User:
    """The user ``user_id`` as a principal with ``owner`` may see it.

    Another owner's user answers exactly like a missing one: ``NotFound('user_not_found')``.
    """
    user = db.session.get(User, user_id)
    if user is None or (owner is not None and user.external_owner != owner):
        raise NotFound("user_not_found", f"No user with id {user_id}")
    return user


def deactivate_user(user_id: uuid.UUID, owner: str | None = None) -> User:
    """Deactivate ``user_id`` (idempotent); nothing is deleted, an upsert with ``active: true``
    reactivates.  From the next request on, every credential of the user is refused with 403
    ``user_inactive`` and their cues stop firing."""
    user = get_internal_user(user_id, owner)
    if user.active:
        user.active = False
        user.updated_at = utcnow()
        db.session.commit()
    return user


def reactivate_user(user_id: uuid.UUID, owner: str | None = None) -> User:
    """Reactivate a deactivated ``user_id`` (idempotent), as an upsert with ``active: true``
    does: their credentials work again from the next request on and their cues fire again."""
    user = get_internal_user(user_id, owner)
    if not user.active:
        user.active = True
        user.updated_at = utcnow()
        db.session.commit()
    return user


def account_summary(user: User) -> dict[str, Any]:
    """The fields of ``GET /v1/auth/me``: identity, limits, and this month's real counts."""
    from app.quotas import usage_counts

    counts = usage_counts(user)
    return {
        "id": user.id, "email": user.email, "slug": user.slug, "plan": user.plan,
        "active_cues": counts.active_cues,
        "active_cue_limit": user.active_cue_limit,
        "executions_this_month": counts.executions_this_month,
        "monthly_execution_limit": user.monthly_execution_limit,
        "monthly_message_limit": user.monthly_message_limit,
        "rate_limit_per_minute": user.rate_limit_per_minute,
        "has_webhook_secret": bool(user.webhook_secret),
        "api_key_prefix": user.api_key_prefix,
    }
