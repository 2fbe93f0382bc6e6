"""Named service principals: creation, key rotation and retirement, revocation, lookup.

A principal is a named integrator backend with an optional owner tag and a set of scopes.  It
holds one or two live keys (``svc_`` + 43 URL-safe characters, stored only as SHA-256), so a key
can be rotated without an outage: create the second key, deploy it, retire the first.  Revoking
the principal stops every key at the next request, because keys are looked up on every request
and never cached.

Services own their transaction and raise ``AppError``; the CLI (``flask services``) is their
only caller besides the resolver's :func:`find_principal_by_token`.
"""

from __future__ import annotations

import functools
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Uuid, bindparam, select
from sqlalchemy.exc import IntegrityError

from app.auth.identity import ALL_SCOPES, ServicePrincipal
from app.auth.models import ServiceKey, ServicePrincipalRecord
from app.auth.tokens import hash_secret
from app.db import fetch_all, fetch_first, utcnow
from app.errors import BadRequest, Conflict, NotFound
from app.extensions import db

SERVICE_KEY_PREFIX = "svc_"
#: Scopes a principal gets when ``flask services create`` is given none.
DEFAULT_SCOPES = frozenset({"users:write", "users:act"})
MAX_LIVE_KEYS = 2
#: Names reserved for the built-in env principal and its previous token.
RESERVED_NAMES = frozenset({"env", "env-previous"})
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")


def generate_service_key() -> str:
    """A new principal key: ``svc_`` + 43 URL-safe characters (256 bits)."""
    return SERVICE_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key and its plaintext, shown exactly once."""

    principal: ServicePrincipalRecord
    key: ServiceKey
    token: str


def _check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = chosen - ALL_SCOPES
    if unknown:
        raise BadRequest("invalid_scope", f"Unknown scope(s): {', '.join(sorted(unknown))}; "
                                          f"choose from {', '.join(sorted(ALL_SCOPES))}")
    if not chosen:
        raise BadRequest("invalid_scope", "A principal needs at least one scope")
    return chosen


def _add_key(principal: ServicePrincipalRecord) -> tuple[ServiceKey, str]:
    token = generate_service_key()
    key = ServiceKey(principal_id=principal.id, key_hash=hash_secret(token),
                     key_prefix=token[:12], created_at=utcnow())
    db.session.add(key)
    return key, token


def get_principal(name: str) -> ServicePrincipalRecord:
    """The principal called ``name`` or ``NotFound('principal_not_found')``."""
    principal = db.session.execute(select(ServicePrincipalRecord)
                                   .where(ServicePrincipalRecord.name == name)).scalar_one_or_none()
    if principal is None:
        raise NotFound("principal_not_found", f"No service principal named {name!r}")
    return principal


def live_keys(principal: ServicePrincipalRecord) -> list[ServiceKey]:
    """The principal's keys that are not retired, oldest first."""
    return list(db.session.scalars(
        select(ServiceKey).where(ServiceKey.principal_id == principal.id,
                                 ServiceKey.retired_at.is_(None))
        .order_by(ServiceKey.created_at, ServiceKey.id)))


def create_principal(name: str, owner: str | None = None,
                     scopes: Iterable[str] | None = None) -> NewKey:
    """Create principal ``name`` with its first key; the plaintext key is returned once.

    ``name``: 1–64 characters ``a-z 0-9 . _ -`` (``env`` is reserved).  ``owner``: an owner tag
    (≤ 64 characters) binding the principal to that owner's users; None = unbound.  ``scopes``:
    defaults to ``users:write users:act``.  A taken name → ``Conflict('principal_exists')``.
    """
    if not _NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise BadRequest("invalid_principal_name",
                         "Name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting "
                         "and ending with a letter or digit, and not 'env'")
    if owner is not None and not 1 <= len(owner) <= 64:
        raise BadRequest("invalid_owner", "The owner tag must be 1-64 characters")
    chosen = _check_scopes(DEFAULT_SCOPES if scopes is None else scopes)
    principal = ServicePrincipalRecord(name=name, owner=owner, scopes=" ".join(sorted(chosen)),
                                       created_at=utcnow())
    db.session.add(principal)
    try:
        db.session.flush()
        key, token = _add_key(principal)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("principal_exists", f"A service principal named {name!r} exists") from None
    return NewKey(principal=principal, key=key, token=token)


def rotate_key(name: str) -> NewKey:
    """Add a second live key to ``name`` (the first keeps working until retired).

    Refused when the principal is revoked, or already has two live keys (retire one first), so
    at most two keys are ever live.
    """
    principal = get_principal(name)
    if principal.revoked_at is not None:
        raise Conflict("principal_revoked", f"{name!r} is revoked; create a new principal")
    if len(live_keys(principal)) >= MAX_LIVE_KEYS:
        raise Conflict("too_many_keys", f"{name!r} already has {MAX_LIVE_KEYS} live keys; "
                                        "retire the old one first (flask services retire-key)")
    key, token = _add_key(principal)
    db.session.commit()
    return NewKey(principal=principal, key=key, token=token)


def retire_key(name: str, key_ref: str | None = None) -> ServiceKey:
    """Retire one live key of ``name``: the one whose id or prefix is ``key_ref``, else the oldest.

    The last live key cannot be retired (that would be a revocation: use :func:`revoke_principal`).
    The retired key is refused from the next request on.
    """
    principal = get_principal(name)
    keys = live_keys(principal)
    if key_ref is None:
        target = keys[0] if keys else None
    else:
        target = next((k for k in keys if key_ref in (str(k.id), k.key_prefix)), None)
    if target is None:
        raise NotFound("key_not_found", f"{name!r} has no live key {key_ref or ''}".rstrip())
    if len(keys) == 1:
        raise Conflict("last_live_key", f"{name!r} has only this live key; rotate first, or "
                                        "revoke the principal")
    target.retired_at = utcnow()
    db.session.commit()
    return target


def revoke_principal(name: str) -> ServicePrincipalRecord:
    """Revoke ``name``: every key of it is refused from the next request on (idempotent)."""
    principal = get_principal(name)
    if principal.revoked_at is None:
        principal.revoked_at = utcnow()
        db.session.commit()
    return principal


def list_principals() -> list[tuple[ServicePrincipalRecord, list[ServiceKey]]]:
    """Every principal with all of its keys (live and retired), by name."""
    principals = list(db.session.scalars(select(ServicePrincipalRecord)
                                         .order_by(ServicePrincipalRecord.name)))
    keys: dict = {}
    for key in db.session.scalars(select(ServiceKey).order_by(ServiceKey.created_at)):
        keys.setdefault(key.principal_id, []).append(key)
    return [(p, keys.get(p.id, [])) for p in principals]


@functools.lru_cache(maxsize=16)
def _lookup_statement(with_subject: bool, extras=None):
    """The key lookup, built once (building a statement costs more than running it).

    With the subject, also the extras its view reads with its caller (a
    :class:`~app.auth.identity.CallerExtras`, correlated to the subject's row).
    """
    from app.users.models import User

    # Labelled: a view's extras may add columns of the same names (a cue page's ``id``).
    columns = [ServiceKey.id.label("service_key_id"),
               ServicePrincipalRecord.id.label("service_principal_id"),
               ServicePrincipalRecord.name.label("service_principal_name"),
               ServicePrincipalRecord.owner.label("service_principal_owner"),
               ServicePrincipalRecord.scopes.label("service_principal_scopes")]
    query = select(*columns, User) if with_subject else select(*columns)
    query = (query.select_from(ServiceKey)
             .join(ServicePrincipalRecord, ServicePrincipalRecord.id == ServiceKey.principal_id))
    if with_subject:
        query = query.outerjoin(User, User.id == bindparam("subject_id", type_=Uuid()))
        if extras is not None:
            query = query.add_columns(*extras.columns())
            for target, onclause in extras.outer_joins():
                query = query.outerjoin(target, onclause)
            if extras.order_by is not None:
                query = (query.order_by(*extras.order_by())
                         .limit(bindparam("page_limit")).offset(bindparam("page_offset")))
    return query.where(ServiceKey.key_hash == bindparam("key_hash"),
                       ServiceKey.retired_at.is_(None),
                       ServicePrincipalRecord.revoked_at.is_(None))


def find_principal_by_token(token: str, subject_id: uuid.UUID | None = None,
                            extras=None, extra_params: dict | None = None):
    """``(principal, subject, fetched)`` for a presented ``svc_`` key; ``(None, None, None)``
    when the key is unknown, retired, or its principal revoked.

    One indexed lookup by the key's hash; not cached, so revocation and retirement apply to the
    very next request.  With ``subject_id`` the user it names is fetched in the same statement
    (``subject`` is that ``User`` or None), saving a round trip on every delegated request, and
    so are the view's ``extras`` (``fetched``: their values, or their rows for row extras; None
    when not read).
    """
    with_subject = subject_id is not None
    params = {"key_hash": hash_secret(token)}
    if with_subject:
        params["subject_id"] = subject_id
    else:
        extras = None
    if extras is not None:
        statement, all_params = _lookup_statement(True, extras), {**params, **extra_params}
        if extras.order_by is not None:
            rows = fetch_all(statement, all_params)
        else:
            first = fetch_first(statement, all_params)
            rows = [first] if first is not None else []
        if rows:
            key_id, principal_id, name, owner, scopes, subject = rows[0][:6]
            fetched = None
            if subject is not None:
                fetched = rows if extras.order_by is not None else tuple(rows[0][6:])
            principal = ServicePrincipal(name=name, key_id=str(key_id),
                                         scopes=frozenset(scopes.split()), owner=owner,
                                         principal_id=principal_id)
            return principal, subject, fetched
        # No row: an unknown key, or a page past the end (no row to carry the key): ask again.
    row = fetch_first(_lookup_statement(with_subject), params)
    if row is None:
        return None, None, None
    key_id, principal_id, name, owner, scopes = row[:5]
    principal = ServicePrincipal(name=name, key_id=str(key_id), scopes=frozenset(scopes.split()),
                                 owner=owner, principal_id=principal_id)
    return principal, (row[5] if with_subject else None), None


def minting_principal_alive(ref: str) -> bool:
    """Whether the principal that minted a delegated session (claim ``prn``) still stands.

    ``ref`` is a principal id or ``env``.  A named principal must exist, be unrevoked and still
    hold ``keys:mint``; ``env`` needs delegation on and ``INTERNAL_AUTH_TOKEN`` set.  Checked on
    every request made with such a session (one indexed lookup), so revocation ends the session
    at the next request, refresh included.
    """
    from flask import current_app

    if ref == "env":
        config = current_app.config
        return bool(config["EXTERNAL_AUTH_BACKEND"] and config["INTERNAL_AUTH_TOKEN"])
    try:
        principal_id = uuid.UUID(ref)
    except ValueError:
        return False
    row = db.session.execute(
        select(ServicePrincipalRecord.revoked_at, ServicePrincipalRecord.scopes)
        .where(ServicePrincipalRecord.id == principal_id)).first()
    return row is not None and row.revoked_at is None and "keys:mint" in row.scopes.split()
