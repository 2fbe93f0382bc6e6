"""Credential resolution: the only place that reads authentication headers.

One function per credential path, tried in a fixed precedence by :func:`resolve_identity`:

1. ``X-Service-Key: <token>`` or ``Authorization: Bearer <token>`` equal to a service credential
   (only while ``EXTERNAL_AUTH_BACKEND=true``): the env token (or its previous value during a
   rotation), or a named principal's ``svc_`` key → Path 2, acting for ``X-On-Behalf-Of``
   within the principal's scopes and owner binding.
2. ``Authorization: Bearer cue_sk_…`` → Path 1, per-user API key.
3. any other bearer → Path 3, session JWT.

Ambiguous requests are rejected rather than reinterpreted: both ``Authorization`` and
``X-Service-Key`` → 400 ``conflicting_credentials``; ``X-On-Behalf-Of`` beside a user credential →
400 ``on_behalf_of_requires_service_credential``.  A deactivated user is refused on every path
with 403 ``user_inactive``, here and nowhere else.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from flask import current_app, g, request
from sqlalchemy import Uuid, bindparam, select

from app.auth.identity import ALL_SCOPES, AuthPath, CallerExtras, Identity, ServicePrincipal
from app.auth.tokens import (
    API_KEY_PREFIX,
    MINTED_BY_CLAIM,
    SessionError,
    decode_session_token,
    hash_secret,
    secrets_equal,
)
from app.db import fetch_all, fetch_first
from app.errors import BadRequest, Forbidden, NotFound, Unauthorized
from app.extensions import db

ON_BEHALF_OF = "X-On-Behalf-Of"
SERVICE_KEY = "X-Service-Key"

#: The built-in principal behind the env ``INTERNAL_AUTH_TOKEN``: unrestricted.
ENV_PRINCIPAL = ServicePrincipal(name="env", key_id="env", scopes=ALL_SCOPES)
#: The same principal authenticated by ``INTERNAL_AUTH_TOKEN_PREVIOUS`` (during a rotation).
ENV_PREVIOUS_PRINCIPAL = ServicePrincipal(name="env", key_id="env-previous", scopes=ALL_SCOPES)
#: Prefix of named principals' keys (app.auth.principals).
SERVICE_KEY_PREFIX = "svc_"


def _bearer() -> str | None:
    """The bearer token, or None when there is no ``Authorization: Bearer`` header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    if not header.startswith("Bearer "):
        return ""
    return header[len("Bearer "):].strip()


def _presented_service_token() -> tuple[str | None, bool]:
    """Return (token, explicit) where ``explicit`` means it came in ``X-Service-Key``."""
    service_key = request.headers.get(SERVICE_KEY)
    if service_key is not None:
        return service_key.strip(), True
    return _bearer(), False


#: Marks "the subject user was not looked up together with the principal".
_NOT_FETCHED = object()


def _find_principal(token: str | None, subject_id: uuid.UUID | None = None):
    """``(principal or None, subject)``; ``subject`` is the user ``subject_id`` (or None when
    absent) if it was fetched in the principal's own query, else ``_NOT_FETCHED``."""
    config = current_app.config
    if not token or not config["EXTERNAL_AUTH_BACKEND"]:
        return None, _NOT_FETCHED
    if secrets_equal(token, config["INTERNAL_AUTH_TOKEN"]):
        return ENV_PRINCIPAL, _NOT_FETCHED
    if secrets_equal(token, config["INTERNAL_AUTH_TOKEN_PREVIOUS"]):
        return ENV_PREVIOUS_PRINCIPAL, _NOT_FETCHED
    if token.startswith(SERVICE_KEY_PREFIX):
        from app.auth.principals import find_principal_by_token

        extras, extra_params = _view_extras() if subject_id is not None else (None, None)
        principal, subject, fetched = find_principal_by_token(token, subject_id, extras,
                                                              extra_params)
        if fetched is not None:
            g.caller_extras = (extras.name, subject.id, fetched)
        return principal, (subject if subject_id is not None else _NOT_FETCHED)
    return None, _NOT_FETCHED


def find_service_principal(token: str | None) -> ServicePrincipal | None:
    """The service principal owning ``token``, or None (also when delegation is off).

    The env tokens (``INTERNAL_AUTH_TOKEN`` and, during a rotation,
    ``INTERNAL_AUTH_TOKEN_PREVIOUS``)
    are compared in constant time; a ``svc_`` key is looked up by its hash among the live keys of
    unrevoked principals (no cache, so revocation applies to the next request).
    """
    return _find_principal(token)[0]


def _subject_id() -> uuid.UUID | None:
    """``X-On-Behalf-Of`` as a UUID when it is one (errors are reported later, in order)."""
    try:
        return uuid.UUID((request.headers.get(ON_BEHALF_OF) or "").strip())
    except ValueError:
        return None


def require_scope(principal: ServicePrincipal, scope: str) -> None:
    """403 ``missing_scope_<scope>`` unless ``principal`` holds ``scope``."""
    if not principal.has_scope(scope):
        raise Forbidden(f"missing_scope_{scope.replace(':', '_')}",
                        f"The service principal {principal.name!r} lacks the scope {scope!r}",
                        scope=scope)


def _check_active(user) -> None:
    """A deactivated user is refused on every credential path."""
    if not user.active:
        raise Forbidden("user_inactive", "This user is deactivated")


def _note_principal(principal: ServicePrincipal, subject=None) -> None:
    """Remember who acted (and for whom) for the audit trail and key-usage tracking."""
    from app.auth.audit import note_key_used

    g.service_principal = principal
    g.on_behalf_of = subject
    note_key_used(principal)


def _reject_mixed_headers() -> None:
    if request.headers.get(SERVICE_KEY) is not None and request.headers.get("Authorization"):
        raise BadRequest(
            "conflicting_credentials",
            f"Send either Authorization or {SERVICE_KEY}, not both",
        )


def _on_behalf_of_user(principal: ServicePrincipal, prefetched=_NOT_FETCHED) -> Identity:
    """Path 2: resolve ``X-On-Behalf-Of`` to the user the principal acts for.

    Order: scope ``users:act`` (403) → header present (400) → a UUID (400) → a user the
    principal's owner binding covers (404 ``user_not_found``, identical for another owner's user
    and for no user at all) → active (403 ``user_inactive``).
    """

    _note_principal(principal)
    require_scope(principal, "users:act")
    raw = (request.headers.get(ON_BEHALF_OF) or "").strip()
    if not raw:
        raise BadRequest(
            "internal_token_requires_on_behalf_of",
            f"A service credential must name the acting user in {ON_BEHALF_OF}",
        )
    try:
        user_id = uuid.UUID(raw)
    except ValueError:
        raise BadRequest("invalid_on_behalf_of", f"{ON_BEHALF_OF} must be a user UUID") from None
    g.on_behalf_of = user_id
    # A named principal's key and the subject come back from one query (one round trip).
    if prefetched is _NOT_FETCHED:
        user = _fetch_user(_user_by_id, {"user_id": user_id})
    else:
        user = prefetched
    if user is None or not principal.may_act_for(user):
        raise NotFound("user_not_found", f"No user with id {user_id}")
    _check_active(user)
    return Identity(path=AuthPath.DELEGATED, user=user, principal=principal)


def _user_with(extras: CallerExtras | None):
    """``SELECT users`` plus the view's extras (their columns and outer joins; a page of rows
    for row extras)."""
    from app.users.models import User

    statement = select(User).select_from(User)
    if extras is not None:
        statement = statement.add_columns(*extras.columns())
        for target, onclause in extras.outer_joins():
            statement = statement.outerjoin(target, onclause)
        if extras.order_by is not None:
            statement = (statement.order_by(*extras.order_by())
                         .limit(bindparam("page_limit")).offset(bindparam("page_offset")))
    return statement


@lru_cache(maxsize=16)
def _user_by_id(extras: CallerExtras | None = None):
    """The Path 2 subject lookup, built once (``session.get`` builds its query every time)."""
    from app.users.models import User

    return _user_with(extras).where(User.id == bindparam("user_id", type_=Uuid()))


@lru_cache(maxsize=16)
def _user_by_key_hash(extras: CallerExtras | None = None):
    """The Path 1 lookup, built once: constructing a statement costs more than running it."""
    from app.users.models import User

    return _user_with(extras).where(User.api_key_hash == bindparam("key_hash"))


def _view_extras() -> tuple[CallerExtras | None, dict | None]:
    """The extras the request's view asks to read with its caller, and their parameters."""
    from app.api import view_handler

    extras = getattr(view_handler(), "_caller_extras", None)
    if extras is not None and not isinstance(extras, CallerExtras):
        extras = extras()  # chosen per request
    if extras is None:
        return None, None
    params = extras.params()
    return (extras, params) if params is not None else (None, None)


def _fetch_user(statement_for, params: dict):
    """Run a user lookup, with the extras the request's view asked for (same round trip).

    On PostgreSQL the lookup runs straight on the driver, and the caller (and any entity the
    extras join, a send's agents) is built from the row as the ORM would load it
    (``app.db.fetch_loaded_direct``): about 65 µs less for the user alone, a quarter of a cue
    page, a sixth of a send (bench/README.md, "Production profile").  Elsewhere, or for a user
    already in the session (a request inside another's), the ORM reads it.
    """
    extras, extra_params = _view_extras()
    if extras is None:
        return _user_alone(statement_for, params)
    statement = statement_for(extras)
    all_params = {**params, **extra_params}
    if extras.order_by is None:
        row = fetch_first(statement, all_params)
        if row is None:
            return None
        g.caller_extras = (extras.name, row[0].id, tuple(row[1:]))
        return row[0]
    # Row extras: a page, read by name (each row starts with the user).
    rows = fetch_all(statement, all_params)
    if not rows:  # no such user, or a page past the end (no row to carry the user)
        return _user_alone(statement_for, params)
    g.caller_extras = (extras.name, rows[0][0].id, rows)
    return rows[0][0]


def _user_alone(statement_for, params: dict):
    row = fetch_first(statement_for(None), params)
    return row[0] if row is not None else None


def _api_key_user(token: str) -> Identity:
    """Path 1: a ``cue_sk_`` key, looked up by its hash."""
    from app.auth.services import rotated_key_notice

    key_hash = hash_secret(token)
    user = _fetch_user(_user_by_key_hash, {"key_hash": key_hash})
    if user is None:
        if rotated_key_notice(key_hash):
            raise Unauthorized("key_rotated",
                               "This API key has been rotated. Use your new key.")
        raise Unauthorized("invalid_api_key", "Invalid or missing API key")
    _check_active(user)
    return Identity(path=AuthPath.API_KEY, user=user)


def _session_user(token: str) -> Identity:
    """Path 3: an HS256 session JWT signed with ``SESSION_SECRET``."""
    from app.users.models import User

    try:
        claims = decode_session_token(token, current_app.config["SESSION_SECRET"])
        user_id = uuid.UUID(str(claims["sub"]))
    except SessionError as exc:
        raise Unauthorized(exc.code, exc.message) from None
    except ValueError:
        raise Unauthorized("invalid_session", "Invalid session token") from None
    minted_by = claims.get(MINTED_BY_CLAIM)
    if minted_by is not None:
        from app.auth.principals import minting_principal_alive

        # A session minted under delegation lives no longer than the principal's right to mint.
        if not isinstance(minted_by, str) or not minting_principal_alive(minted_by):
            raise Unauthorized("session_principal_revoked",
                               "This session was minted by a service principal that has since "
                               "been revoked (or lost keys:mint); sign in again")
    user = db.session.get(User, user_id)
    if user is None:
        raise Unauthorized("user_not_found", "The session's user no longer exists")
    _check_active(user)
    return Identity(path=AuthPath.SESSION, user=user, minted_by=minted_by)


def resolve_identity() -> Identity:
    """Authenticate the current request as a user (any of the three paths)."""
    _reject_mixed_headers()
    token, explicit = _presented_service_token()
    principal, subject = _find_principal(token, _subject_id())
    if principal is not None:
        return _on_behalf_of_user(principal, subject)
    if explicit or (token and token.startswith(SERVICE_KEY_PREFIX)
                     and current_app.config["EXTERNAL_AUTH_BACKEND"]):
        raise Unauthorized("invalid_internal_token", "Invalid service credential")
    if not token:
        raise Unauthorized("invalid_api_key", "Invalid or missing API key")

    wants_delegation = bool((request.headers.get(ON_BEHALF_OF) or "").strip())
    if token.startswith(API_KEY_PREFIX):
        identity = _api_key_user(token)
    else:
        try:
            identity = _session_user(token)
        except Unauthorized:
            if wants_delegation and current_app.config["EXTERNAL_AUTH_BACKEND"]:
                # The caller meant delegation: say the service credential is wrong.
                raise Unauthorized("invalid_internal_token", "Invalid service credential") from None
            raise
    if wants_delegation:
        raise BadRequest(
            "on_behalf_of_requires_service_credential",
            f"{ON_BEHALF_OF} is only accepted with a service credential, not with a user's "
            "API key or session",
        )
    return identity


def resolve_service() -> Identity:
    """Authenticate the current request as a service principal (internal endpoints)."""
    _reject_mixed_headers()
    token, _explicit = _presented_service_token()
    principal = find_service_principal(token)
    if principal is None:
        raise Unauthorized("invalid_internal_token", "Invalid service credential")
    _note_principal(principal)
    return Identity(path=AuthPath.SERVICE, principal=principal)
