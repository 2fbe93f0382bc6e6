"""Schemas of the ``/v1/auth`` account endpoints."""

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema


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
