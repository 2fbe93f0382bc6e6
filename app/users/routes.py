"""``/v1/internal/users`` and ``/v1/internal/audit``: integrators mirror, sync, read and
deactivate their users, and read the audit trail of delegated requests (service credential
with scope ``users:write``; a principal bound to an owner sees only that owner's users).

Mounted only when ``EXTERNAL_AUTH_BACKEND=true`` (see the ``MODULES`` table).
"""

import uuid
from functools import wraps

from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_identity, service_required
from app.auth.audit import list_audit
from app.errors import BadRequest
from app.db import single_statement
from app.users import services
from app.users.schemas import (
    AuditPageSchema,
    AuditQuerySchema,
    InternalUserDetailSchema,
    InternalUserSchema,
    InternalUserUpsertSchema,
    UserSyncResultSchema,
    UserSyncSchema,
)
from app.users.sync import sync_users

blp = Blueprint("internal_users", __name__, url_prefix="/v1/internal",
                description="Service-only user management for integrators (delegation).")


def parse_user_id(raw: str) -> uuid.UUID:
    """The path's user id as a UUID, or 400 ``invalid_user_id``."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest("invalid_user_id", "user_id must be a UUID") from None


def with_user_id(view):
    """Check the path's user id before the body is validated (400 beats 422)."""

    @wraps(view)
    def wrapper(*args, user_id, **kwargs):
        return view(*args, user_id=parse_user_id(user_id), **kwargs)

    return wrapper


def _owner():
    """The calling principal's owner tag (None: unbound, sees every user)."""
    return current_identity.principal.owner


@blp.route("/users")
class InternalUsers(MethodView):
    @service_required("users:write")
    @blp.arguments(UserSyncSchema)
    @blp.response(200, UserSyncResultSchema)
    def put(self, body):
        """Bulk sync up to 1,000 users; per-item results; failures don't block the rest."""
        return sync_users(body["users"], owner=_owner())


#: The user columns the upsert answers with (every field of its schema but ``created``).
_USER_FIELDS = tuple(name for name in InternalUserSchema().fields if name != "created")


@blp.route("/users/<user_id>")
class InternalUserById(MethodView):
    @single_statement
    @service_required("users:write")
    @with_user_id
    @blp.arguments(InternalUserUpsertSchema)
    @blp.response(200, InternalUserSchema)
    def put(self, body, user_id):
        """Create or update a user (idempotent; `created` says which)."""
        user, created = services.upsert_internal_user(user_id, body, owner=_owner())
        return {**{c: getattr(user, c) for c in _USER_FIELDS}, "created": created}

    @service_required("users:write")
    @with_user_id
    @blp.response(200, InternalUserDetailSchema)
    def get(self, user_id):
        """Read one user (another owner's user answers 404 like a missing one)."""
        return services.get_internal_user(user_id, owner=_owner())

    @service_required("users:write")
    @with_user_id
    @blp.response(200, InternalUserDetailSchema)
    def delete(self, user_id):
        """Deactivate a user: refused on every credential path, cues paused; nothing deleted."""
        return services.deactivate_user(user_id, owner=_owner())


@blp.route("/audit")
class Audit(MethodView):
    @service_required("users:write")
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query):
        """Audit trail of service requests, newest first (filter by principal, user, time)."""
        page = list_audit(viewer=current_identity.principal, **query)
        return {"records": page.records, "total": page.total, "limit": query["limit"],
                "offset": query["offset"]}
