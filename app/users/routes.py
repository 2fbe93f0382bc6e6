"""``/v1/internal/users``: integrators mirror their users into Cueline (service credential).

Mounted only when ``EXTERNAL_AUTH_BACKEND=true`` (see the ``MODULES`` table).
"""

import uuid
from functools import wraps

from flask.views import MethodView

from app.api import Blueprint
from app.auth import service_required
from app.errors import BadRequest
from app.users import services
from app.users.schemas import InternalUserSchema, InternalUserUpsertSchema

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


@blp.route("/users/<user_id>")
class InternalUserById(MethodView):
    @service_required
    @with_user_id
    @blp.arguments(InternalUserUpsertSchema)
    @blp.response(200, InternalUserSchema)
    def put(self, body, user_id):
        """Create or update a user (idempotent; `created` says which)."""
        user, created = services.upsert_internal_user(user_id, body)
        return {**{c: getattr(user, c) for c in InternalUserSchema().fields if c != "created"},
                "created": created}
