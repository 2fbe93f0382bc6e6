"""``/v1/internal/invites``: service callers mint, list and revoke registration invites.

Mounted only when ``EXTERNAL_AUTH_BACKEND=true`` (operators without delegation use
``flask invites …``).  A principal bound to an owner mints invites of that owner and sees and
revokes only those (another owner's invite answers like a missing one), as with users.
"""

import uuid

from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_identity, service_required
from app.auth import services
from app.auth.schemas import InviteCreateSchema, InviteListSchema, NewInviteSchema
from app.errors import NotFound

blp = Blueprint("internal_invites", __name__, url_prefix="/v1/internal",
                description="Service-only registration invites.")


def invite_view(invite, redemptions=()) -> dict:
    """The listed form of an invite (no token)."""
    return {**{c.name: getattr(invite, c.name) for c in invite.__table__.columns
               if c.name not in ("token_hash", "owner")},
            "redemptions": [{"user_id": r.user_id, "redeemed_at": r.redeemed_at}
                            for r in redemptions]}


@blp.route("/invites")
class Invites(MethodView):
    @service_required("users:write")
    @blp.arguments(InviteCreateSchema)
    @blp.response(201, NewInviteSchema)
    def post(self, body):
        """Mint an invite token (shown once)."""
        principal = current_identity.principal
        new = services.create_invite(f"service:{principal.name}", owner=principal.owner, **body)
        return invite_view(new.invite) | {"token": new.token}

    @service_required("users:write")
    @blp.response(200, InviteListSchema)
    def get(self):
        """List invites with their use counts and redemptions (never tokens)."""
        owner = current_identity.principal.owner
        return {"invites": [invite_view(i, r) for i, r in services.list_invites(owner)]}


@blp.route("/invites/<invite_id>")
class InviteById(MethodView):
    @service_required("users:write")
    @blp.response(204)
    def delete(self, invite_id):
        """Revoke an invite; it can no longer be redeemed."""
        try:
            parsed = uuid.UUID(invite_id)
        except ValueError:
            raise NotFound("invite_not_found", "No such invite") from None
        services.revoke_invite(parsed, owner=current_identity.principal.owner)
