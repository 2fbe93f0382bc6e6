"""The resolved identity of a request and the ``current_identity`` proxy views read."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import g
from werkzeug.local import LocalProxy

if TYPE_CHECKING:
    from app.users.models import User


class AuthPath(enum.StrEnum):
    """How the caller authenticated."""

    API_KEY = "api_key"          # Path 1: cue_sk_ key
    SESSION = "session"          # Path 3: session JWT
    DELEGATED = "delegated"      # Path 2: service credential + X-On-Behalf-Of
    SERVICE = "service"          # service credential alone (internal endpoints)


#: ``users:write`` — upsert, deactivate, bulk sync, invites, read the audit trail;
#: ``users:act`` — act for a user with ``X-On-Behalf-Of``;
#: ``keys:mint`` — mint credentials while acting for a user: regenerate or reveal the API key,
#: refresh (mint) a session JWT.  Off by default.
ALL_SCOPES = frozenset({"users:write", "users:act", "keys:mint"})


@dataclass(frozen=True)
class ServicePrincipal:
    """A service that may act for users.  The env ``INTERNAL_AUTH_TOKEN`` is principal ``env``.

    ``key_id`` names the key that authenticated this request (``env``, ``env-previous``, or a
    stored key's id); ``owner`` binds the principal to the users of that owner tag (None = all
    users); ``principal_id`` is None for the built-in env principal.
    """

    name: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    owner: str | None = None
    principal_id: uuid.UUID | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def may_act_for(self, user: User) -> bool:
        """Whether the owner binding lets this principal act for ``user``."""
        return self.owner is None or user.external_owner == self.owner


@dataclass(frozen=True)
class Identity:
    """Who the request acts as (``user``) and, for delegation, which service acts for them."""

    path: AuthPath
    user: User | None = None
    principal: ServicePrincipal | None = None
    #: For a session minted under delegation: the minting principal (id or ``env``).
    minted_by: str | None = None

    @property
    def minting_principal(self) -> str | None:
        """Who a session minted for this caller must name: the acting principal, if any."""
        if self.principal is not None:
            principal_id = self.principal.principal_id
            return "env" if principal_id is None else str(principal_id)
        return self.minted_by

    @property
    def user_id(self):
        """The user's id, read without a database round trip.

        After a commit or rollback the user row is expired, and reading ``user.id`` would load
        it again; the request log reads this after the response is built, when the database may
        be gone (that reload turned a 503 into a 500).  The identity key survives expiry.
        """
        if self.user is None:
            return None
        from sqlalchemy import inspect

        identity_key = inspect(self.user).identity
        return identity_key[0] if identity_key else self.user.id


@dataclass(frozen=True)
class CallerExtras:
    """Values a view wants read in the same statement as its caller's user row.

    ``columns()`` builds (once) what the statement adds to the user row: scalar subqueries
    correlated to ``users.id``, or entities that ``outer_joins()`` joins in as ``(target,
    onclause)`` pairs; ``params()`` gives their bind parameters for the current request, or None
    when this request should not read them (say, its query arguments are invalid: the view then
    answers its own way).  The API-key and delegated lookups add them to their statement, saving
    the view a round trip; other credential paths leave them out, so a view must still be able
    to compute them itself (see :func:`caller_extras`).  Entities read this way are in the
    request's session, so ``session.get`` finds them without a query.

    With ``order_by`` the extras are *rows* — a page of what ``outer_joins()`` joins, in that
    order, cut by the ``page_limit`` and ``page_offset`` parameters — and :func:`caller_extras`
    returns the statement's rows themselves (the caller's user entity first in each).  A page
    past the end has no rows to carry the user, so its lookup is made again without extras.
    """

    name: str
    columns: Callable[[], tuple]
    params: Callable[[], dict[str, Any] | None]
    outer_joins: Callable[[], tuple] = tuple
    order_by: Callable[[], tuple] | None = None


def fetch_with_caller(extras: CallerExtras | Callable[[], CallerExtras | None]):
    """View decorator: read ``extras`` together with the caller's user row when possible.

    ``extras`` may also be a function choosing them per request (or None for none).
    """

    def decorator(view):
        view._caller_extras = extras
        return view

    return decorator


def caller_extras(name: str, user_id) -> tuple | None:
    """The values of the extras called ``name`` read with user ``user_id``, else None (for
    row extras, the rows)."""
    fetched = g.get("caller_extras")
    if fetched is None or fetched[0] != name or fetched[1] != user_id:
        return None
    return fetched[2]


def _get_identity() -> Identity:
    identity = g.get("identity")
    if identity is None:
        raise RuntimeError("current_identity used in a view without @auth_required")
    return identity


#: The identity of the current request; set by the auth decorators.
current_identity: Identity = LocalProxy(_get_identity)  # type: ignore[assignment]
