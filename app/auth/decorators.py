"""View decorators that authenticate the caller and document it in OpenAPI.

Authentication is lazy: only views wearing :func:`auth_required` or :func:`service_required`
resolve credentials, and they do it before arguments are parsed, so a bad credential answers 401
before a bad body answers 422.  The OpenAPI security requirement for authenticated operations is
the document's root ``security`` (built per app from its flags); :func:`public` and
:func:`service_required` override it per operation.
"""

from __future__ import annotations

from copy import deepcopy
from functools import wraps

from flask import g, request
from sqlalchemy.exc import SQLAlchemyError

from app.auth.identity import Identity
from app.auth.resolver import require_scope, resolve_identity, resolve_service
from app.errors import AppError
from app.extensions import db

SERVICE_SECURITY = [{"ServiceToken": []}, {"ServiceKey": []}]


def _document(wrapper, **doc) -> None:
    """Merge ``doc`` into the operation's manual OpenAPI documentation."""
    apidoc = deepcopy(getattr(wrapper, "_apidoc", {}))
    apidoc.setdefault("manual_doc", {}).update(doc)
    wrapper._apidoc = apidoc


def _load_identity() -> Identity:
    """Resolve the caller once per request; the outcome (or its error) is kept on ``g``."""
    if "identity_error" in g:
        raise g.identity_error
    if g.get("identity") is None:
        try:
            g.identity = resolve_identity()
        except AppError as exc:
            g.identity_error = exc
            raise
    return g.identity


def try_identity() -> Identity | None:
    """The caller's identity if their credentials are valid, else None (never raises).

    Used by the rate limiter to pick a bucket before the view runs; the view's own
    :func:`auth_required` then reuses the result instead of resolving twice.
    """
    if not (request.headers.get("Authorization") or request.headers.get("X-Service-Key")):
        return None
    try:
        return _load_identity()
    except AppError:
        return None
    except SQLAlchemyError:
        # Database unreachable: leave the session usable so the view answers 503 cleanly.
        db.session.rollback()
        return None


def _optional_scope(decorator_factory):
    """Let a decorator be used bare (``@auth_required``) or with a scope.

    ``@auth_required("users:act")`` requires that scope of a service principal.
    """

    @wraps(decorator_factory)
    def outer(view_or_scope=None):
        if callable(view_or_scope):
            return decorator_factory(None)(view_or_scope)
        return decorator_factory(view_or_scope)

    return outer


@_optional_scope
def auth_required(scope: str | None = None):
    """Require a user identity (API key, session, or delegation) before the view runs.

    With ``scope``, a delegated request also needs that scope on its service principal (a user
    acting with their own key or session is not affected).
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            identity = _load_identity()
            if scope and identity.principal is not None:
                require_scope(identity.principal, scope)
            return view(*args, **kwargs)

        return wrapper

    return decorator


@_optional_scope
def service_required(scope: str | None = None):
    """Require a service credential (internal endpoints) holding ``scope`` when given.

    ``X-On-Behalf-Of`` is not used.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            g.identity = resolve_service()
            if scope:
                require_scope(g.identity.principal, scope)
            return view(*args, **kwargs)

        _document(wrapper, security=SERVICE_SECURITY)
        return wrapper

    return decorator


def public(view):
    """Mark a view as needing no credential (documents ``security: []``)."""
    _document(view, security=[])
    return view
