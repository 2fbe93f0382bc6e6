"""``/v1/auth``: registration, the caller's account, API key and webhook-secret management."""

from flask import current_app, request
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity, public
from app.auth import services as auth_services
from app.auth.identity import fetch_with_caller
from app.auth.schemas import (
    AccountUpdateSchema,
    MeSchema,
    RegeneratedKeySchema,
    RegeneratedUserWebhookSecretSchema,
    RegisteredSchema,
    RegisterWithInviteSchema,
    RevealedKeySchema,
    UpdatedSchema,
    UserWebhookSecretSchema,
)
from app.errors import AppError, BadRequest, NotFound, ValidationFailed
from app.users import services
from app.db import read_only
from app.quotas import USAGE_WITH_CALLER

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Accounts and credentials.")

CONFIRM_HEADER = "X-Confirm-Destructive"


def require_confirmation() -> None:
    """Destructive regenerations need ``X-Confirm-Destructive: true`` (exact, lowercase)."""
    if request.headers.get(CONFIRM_HEADER) != "true":
        raise BadRequest("confirmation_required",
                         f"This replaces a secret; send {CONFIRM_HEADER}: true to confirm")


@blp.route("/register")
class Register(MethodView):
    @public
    @blp.arguments(RegisterWithInviteSchema)
    @blp.response(201, RegisteredSchema)
    def post(self, body):
        """Sign up with an e-mail address (and an invite when registration is closed)."""
        config = current_app.config
        if body.get("invite"):
            new = auth_services.register_with_invite(body.get("email"), body["invite"])
        elif not config["ALLOW_REGISTER"] and config["ENV"] != "development":
            raise NotFound("not_found", "Registration is closed on this server; "
                                        "ask the operator for an invite")
        elif "email" not in body:
            raise ValidationFailed([{"field": "body.email",
                                 "message": "Missing data for required field."}])
        else:
            new = services.register_user(body["email"])
        return {"api_key": new.api_key, "email": new.user.email}


@blp.route("/me")
class Me(MethodView):
    @fetch_with_caller(USAGE_WITH_CALLER)
    @read_only
    @auth_required
    @blp.response(200, MeSchema)
    def get(self):
        """The caller's account, limits and usage this month."""
        return services.account_summary(current_identity.user) | {
            "auth_path": current_identity.path.value}

    @auth_required
    @blp.arguments(AccountUpdateSchema)
    @blp.response(200, UpdatedSchema)
    def patch(self, body):
        """Change the caller's account details (e-mail, alert webhook URL)."""
        if not body:
            raise AppError("no_fields", "Nothing to update: send at least one of: email, "
                                        "alert_webhook_url", 422)
        return {"updated_at": auth_services.update_account(current_identity.user, body)}


@blp.route("/key/regenerate")
class KeyRegenerate(MethodView):
    @auth_required("keys:mint")  # a service acting for the user needs this scope
    @blp.response(200, RegeneratedKeySchema)
    def post(self):
        """Replace the API key (needs `X-Confirm-Destructive: true`); the old key stops working."""
        require_confirmation()
        key = auth_services.regenerate_api_key(current_identity.user,
                                               current_app.config["SESSION_SECRET"])
        return {"api_key": key, "previous_key_revoked": True}


@blp.route("/key")
class Key(MethodView):
    @auth_required("keys:mint")  # revealing hands out the user's key, like minting one
    @blp.response(200, RevealedKeySchema)
    def get(self):
        """Reveal the stored API key, when a copy exists (after a regenerate or CLI login)."""
        return auth_services.reveal_api_key(current_identity.user,
                                            current_app.config["SESSION_SECRET"])


@blp.route("/webhook-secret")
class WebhookSecret(MethodView):
    @auth_required
    @blp.response(200, UserWebhookSecretSchema)
    def get(self):
        """The secret that signs this account's cue webhooks."""
        return {"webhook_secret": auth_services.webhook_secret(current_identity.user)}


@blp.route("/webhook-secret/regenerate")
class WebhookSecretRegenerate(MethodView):
    @auth_required
    @blp.response(200, RegeneratedUserWebhookSecretSchema)
    def post(self):
        """Replace the webhook signing secret (needs `X-Confirm-Destructive: true`)."""
        require_confirmation()
        secret = auth_services.regenerate_webhook_secret(current_identity.user)
        return {"webhook_secret": secret, "previous_secret_revoked": True}
