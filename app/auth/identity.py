"""The resolved identity of a request and the ``current_identity`` proxy views read."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


@dataclass(frozen=True)
class ServicePrincipal:
    """A service that may act for users.  The env ``INTERNAL_AUTH_TOKEN`` is principal ``env``."""

    name: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Identity:
    """Who the request acts as (``user``) and, for delegation, which service acts for them."""

    path: AuthPath
    user: User | None = None
    principal: ServicePrincipal | None = None

    @property
    def user_id(self):
        return self.user.id if self.user is not None else None


def _get_identity() -> Identity:
    identity = g.get("identity")
    if identity is None:
        raise RuntimeError("current_identity used in a view without @auth_required")
    return identity


#: The identity of the current request; set by the auth decorators.
current_identity: Identity = LocalProxy(_get_identity)  # type: ignore[assignment]
