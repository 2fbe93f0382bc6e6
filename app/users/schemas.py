"""Marshmallow schemas for users, the internal upsert, bulk sync, and the audit trail."""

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.api import INT32_MAX, BaseSchema, WholeMatch

SLUG_PATTERN = r"^(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$"


class InternalUserUpsertSchema(BaseSchema):
    """Body of ``PUT /v1/internal/users/{user_id}``."""

    email = fields.Email(required=True, validate=validate.Length(max=255))
    slug = fields.String(required=True, validate=[
        validate.Length(min=1, max=64),
        WholeMatch(SLUG_PATTERN, error="Must be lower-case letters, digits and inner "
                                             "hyphens, starting and ending with a letter or digit"),
    ])
    plan = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(min=1, max=20))
    active_cue_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                      validate=validate.Range(min=0, max=INT32_MAX))
    monthly_execution_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                             validate=validate.Range(min=0, max=INT32_MAX))
    monthly_message_limit = fields.Integer(load_default=None, allow_none=True, strict=True,
                                           validate=validate.Range(min=0, max=INT32_MAX))
    rate_limit_per_minute = fields.Integer(load_default=None, allow_none=True, strict=True,
                                           validate=validate.Range(min=0, max=INT32_MAX))
    external_owner = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(max=64))
    active = fields.Boolean(load_default=None, allow_none=True, metadata={
        "description": "false deactivates the user (refused on every path, cues paused); "
                       "true reactivates; omitted or null keeps the stored value"})


class InternalUserFieldsSchema(ma.Schema):
    """The fields every internal view of a user shares (``external_owner`` is never returned)."""

    id = fields.UUID(required=True)
    email = fields.String(required=True)
    slug = fields.String(required=True)
    plan = fields.String(required=True)
    active_cue_limit = fields.Integer(required=True)
    monthly_execution_limit = fields.Integer(required=True)
    monthly_message_limit = fields.Integer(required=True)
    rate_limit_per_minute = fields.Integer(required=True)
    active = fields.Boolean(required=True)


class InternalUserSchema(InternalUserFieldsSchema):
    """Response of the internal upsert: the user, and whether this call created it."""

    created = fields.Boolean(required=True)


class InternalUserDetailSchema(InternalUserFieldsSchema):
    """A user as ``GET`` / ``DELETE /v1/internal/users/{user_id}`` return it."""

    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


#: Most users one ``PUT /v1/internal/users`` call may carry.
MAX_SYNC_USERS = 1000


class UserSyncSchema(BaseSchema):
    """Body of ``PUT /v1/internal/users``: each item is validated on its own (per-item errors)."""

    users = fields.List(fields.Raw(), required=True,
                        validate=validate.Length(min=1, max=MAX_SYNC_USERS), metadata={
                            "description": "Users as in the single upsert, plus their `id`"})


class SyncErrorSchema(ma.Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.List(fields.Dict())


class SyncResultSchema(ma.Schema):
    id = fields.Raw(required=True, metadata={"description": "The item's id as sent"})
    status = fields.String(required=True, metadata={
        "description": "created, updated, unchanged or error"})
    error = fields.Nested(SyncErrorSchema)


class SyncSummarySchema(ma.Schema):
    created = fields.Integer(required=True)
    updated = fields.Integer(required=True)
    unchanged = fields.Integer(required=True)
    error = fields.Integer(required=True)


class UserSyncResultSchema(ma.Schema):
    """Answer of a bulk sync: one result per item, in order, and the counts."""

    results = fields.List(fields.Nested(SyncResultSchema), required=True)
    summary = fields.Nested(SyncSummarySchema, required=True)


class AuditQuerySchema(BaseSchema):
    """Filters of ``GET /v1/internal/audit``."""

    principal = fields.String(validate=validate.Length(min=1, max=64))
    user_id = fields.UUID()
    since = fields.AwareDateTime(default_timezone=UTC, metadata={
        "description": "Inclusive lower bound (ISO 8601; UTC when no zone is given)"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={
        "description": "Exclusive upper bound (ISO 8601; UTC when no zone is given)"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=INT32_MAX))


class AuditRecordSchema(ma.Schema):
    id = fields.UUID(required=True)
    at = fields.DateTime(required=True)
    principal = fields.String(required=True)
    key_id = fields.String(required=True)
    user_id = fields.UUID(allow_none=True, required=True)
    method = fields.String(required=True)
    path = fields.String(required=True)
    status = fields.Integer(required=True)
    request_id = fields.String(required=True)


class AuditPageSchema(ma.Schema):
    records = fields.List(fields.Nested(AuditRecordSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
