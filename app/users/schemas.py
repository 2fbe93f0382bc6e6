"""Marshmallow schemas for users and the internal upsert."""

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema

SLUG_PATTERN = r"^(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$"


class InternalUserUpsertSchema(BaseSchema):
    """Body of ``PUT /v1/internal/users/{user_id}``."""

    email = fields.Email(required=True, validate=validate.Length(max=255))
    slug = fields.String(required=True, validate=[
        validate.Length(min=1, max=64),
        validate.Regexp(SLUG_PATTERN, error="Must be lower-case letters, digits and inner "
                                             "hyphens, starting and ending with a letter or digit"),
    ])
    plan = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=20))
    active_cue_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                      validate=validate.Range(min=0))
    monthly_execution_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                             validate=validate.Range(min=0))
    monthly_message_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                           validate=validate.Range(min=0))
    rate_limit_per_minute = fields.Integer(load_default=None, allow_none=True, strict=True,
                                           validate=validate.Range(min=0))
    external_owner = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(max=64))


class InternalUserSchema(ma.Schema):
    """Response of the internal upsert (``external_owner`` is never returned)."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    slug = fields.String(required=True)
    plan = fields.String(required=True)
    active_cue_limit = fields.Integer(required=True)
    monthly_execution_limit = fields.Integer(required=True)
    monthly_message_limit = fields.Integer(required=True)
    rate_limit_per_minute = fields.Integer(required=True)
    created = fields.Boolean(required=True)
