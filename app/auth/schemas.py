"""Schemas of the ``/v1/auth`` account endpoints."""

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.api import INT32_MAX, BaseSchema


class RegisterSchema(BaseSchema):
    """Body of ``POST /v1/auth/register``."""

    email = fields.Email(required=True, validate=validate.Length(max=255))


class RegisteredSchema(ma.Schema):
    api_key = fields.String(required=True, metadata={"description": "Shown once; store it"})
    email = fields.String(required=True)


class MeSchema(ma.Schema):
    """The caller's account and usage (the `cueapi` CLI's `whoami`)."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    slug = fields.String(required=True)
    plan = fields.String(required=True)
    active_cues = fields.Integer(required=True)
    active_cue_limit = fields.Integer(required=True)
    executions_this_month = fields.Integer(required=True)
    monthly_execution_limit = fields.Integer(required=True)
    monthly_message_limit = fields.Integer(required=True)
    rate_limit_per_minute = fields.Integer(required=True)
    has_webhook_secret = fields.Boolean(required=True)
    api_key_prefix = fields.String(required=True)
    auth_path = fields.String(required=True, metadata={
        "description": "How this request authenticated: api_key, session or delegated"})


class RegisterWithInviteSchema(BaseSchema):
    """Body of ``POST /v1/auth/register``: e-mail, and an invite when registration is closed."""

    email = fields.Email(validate=validate.Length(max=255), metadata={
        "description": "Required unless the invite names the address"})
    invite = fields.String(validate=validate.Length(min=1, max=100), metadata={
        "description": "Invite token (`inv_…`); required when open registration is off"})


class AccountUpdateSchema(BaseSchema):
    """Body of ``PATCH /v1/auth/me`` (unknown keys ignored)."""

    email = fields.Email(validate=validate.Length(max=255))
    alert_webhook_url = fields.String(allow_none=True, validate=validate.Length(max=2048),
                                      metadata={"description": "Where alerts are pushed "
                                                "(https; SSRF rules of cue callbacks); "
                                                "\"\" or null removes it"})


class UpdatedSchema(ma.Schema):
    updated_at = fields.DateTime(required=True)


class RegeneratedKeySchema(ma.Schema):
    api_key = fields.String(required=True, metadata={"description": "Shown once; store it"})
    previous_key_revoked = fields.Boolean(required=True)


class RevealedKeySchema(ma.Schema):
    api_key = fields.String(allow_none=True, required=True)
    prefix = fields.String()
    message = fields.String()


class UserWebhookSecretSchema(ma.Schema):
    webhook_secret = fields.String(required=True)


class RegeneratedUserWebhookSecretSchema(UserWebhookSecretSchema):
    previous_secret_revoked = fields.Boolean(required=True)


class InviteCreateSchema(BaseSchema):
    """Body of ``POST /v1/internal/invites``."""

    max_uses = fields.Integer(load_default=1, allow_none=True, strict=True,
                              validate=validate.Range(min=1, max=INT32_MAX), metadata={
                                  "description": "Uses allowed (default 1); null = unlimited"})
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=UTC)
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=255))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))


class RedemptionSchema(ma.Schema):
    user_id = fields.UUID(required=True)
    redeemed_at = fields.DateTime(required=True)


class InviteSchema(ma.Schema):
    """An invite as listed (never with its token)."""

    id = fields.UUID(required=True)
    token_prefix = fields.String(required=True)
    email = fields.String(allow_none=True)
    max_uses = fields.Integer(allow_none=True)
    uses = fields.Integer(required=True)
    expires_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    created_by = fields.String(required=True)
    note = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)
    redemptions = fields.List(fields.Nested(RedemptionSchema))


class NewInviteSchema(InviteSchema):
    token = fields.String(required=True,
                          metadata={"description": "Shown once; give it to the invitee"})


class InviteListSchema(ma.Schema):
    invites = fields.List(fields.Nested(InviteSchema), required=True)
