"""Schemas of ``/v1/cues`` (wire §7) and of the execution objects cues embed (§8.1)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from app.api import BaseSchema, StrictSchema
from app.scheduling.models import VERIFICATION_MODES
from app.scheduling.schemas.fields import (
    HttpMethod,
    OffsetDateTime,
    ZDateTime,
    header_map,
)

MAX_BACKOFF_MINUTES = 7 * 24 * 60


# ---------------------------------------------------------------------------------------------
# Cue requests


class ScheduleSchema(BaseSchema):
    # ``type`` is a free string here: an unknown type is ``400 invalid_schedule`` (wire §7.2).
    type = fields.String(required=True)
    cron = fields.String(allow_none=True)
    at = fields.DateTime(allow_none=True)
    timezone = fields.String(allow_none=True, validate=validate.Length(max=64))


class CallbackSchema(BaseSchema):
    url = fields.String(allow_none=True, validate=validate.Length(max=2048))
    method = HttpMethod(allow_none=True)
    headers = header_map(allow_none=True)
    transport = fields.Raw()

    @validates_schema
    def _no_nested_transport(self, data, **kwargs):
        if "transport" in data:
            raise ma.ValidationError("transport must be top-level, not inside callback",
                                     "transport")


class RetrySchema(BaseSchema):
    max_attempts = fields.Integer(strict=True, validate=validate.Range(min=1, max=10))
    backoff_minutes = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_BACKOFF_MINUTES)),
        validate=validate.Length(min=1, max=10))


class OnFailureSchema(BaseSchema):
    email = fields.Boolean()
    webhook = fields.String(allow_none=True, validate=validate.Length(max=2048))
    pause = fields.Boolean()


class VerificationSchema(BaseSchema):
    mode = fields.String(allow_none=True, validate=validate.OneOf(VERIFICATION_MODES))


class CueCreateSchema(BaseSchema):
    """``POST /v1/cues`` (unknown top-level keys ignored)."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    schedule = fields.Nested(ScheduleSchema, required=True)
    transport = fields.String(load_default="webhook",
                              validate=validate.OneOf(("webhook", "worker")))
    callback = fields.Nested(CallbackSchema, allow_none=True)
    payload = fields.Dict(allow_none=True)
    retry = fields.Nested(RetrySchema, allow_none=True)
    on_failure = fields.Nested(OnFailureSchema, allow_none=True)
    verification = fields.Nested(VerificationSchema, allow_none=True)

    @validates_schema
    def _callback_url_for_webhooks(self, data, **kwargs):
        if data.get("transport", "webhook") == "webhook" and not (data.get("callback") or {}).get(
                "url"):
            raise ma.ValidationError(
                {"url": ["callback.url is required when transport is webhook"]}, "callback")


class CueUpdateSchema(StrictSchema):
    """``PATCH /v1/cues/{id}`` (unknown top-level keys rejected; ``transport`` is fixed)."""

    name = fields.String(validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    status = fields.String(validate=validate.OneOf(("active", "paused")))
    schedule = fields.Nested(ScheduleSchema)
    callback = fields.Nested(CallbackSchema)
    payload = fields.Dict(allow_none=True)
    retry = fields.Nested(RetrySchema, allow_none=True)
    on_failure = fields.Nested(OnFailureSchema, allow_none=True)
    verification = fields.Nested(VerificationSchema, allow_none=True)


class CueListQuerySchema(BaseSchema):
    status = fields.String(validate=validate.Length(max=32))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class CueDetailQuerySchema(BaseSchema):
    execution_limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))
    execution_offset = fields.Integer(load_default=0,
                                      validate=validate.Range(min=0, max=10_000_000))


class FireSchema(BaseSchema):
    """``POST /v1/cues/{id}/fire``: only ``send_at`` is honoured; other keys are ignored."""

    send_at = fields.DateTime(allow_none=True)


# ---------------------------------------------------------------------------------------------
# Cue responses


class ScheduleOutSchema(ma.Schema):
    type = fields.String()
    timezone = fields.String()
    cron = fields.String()
    at = OffsetDateTime()


class CallbackOutSchema(ma.Schema):
    url = fields.String(allow_none=True)
    method = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String())


class RetryOutSchema(ma.Schema):
    max_attempts = fields.Integer()
    backoff_minutes = fields.List(fields.Integer())


class OnFailureOutSchema(ma.Schema):
    email = fields.Boolean()
    webhook = fields.String(allow_none=True)
    pause = fields.Boolean()


class CueSchema(ma.Schema):
    """A cue (wire §7.1)."""

    id = fields.String()
    name = fields.String()
    description = fields.String(allow_none=True)
    status = fields.String()
    transport = fields.String()
    schedule = fields.Nested(ScheduleOutSchema)
    callback = fields.Nested(CallbackOutSchema)
    payload = fields.Dict()
    retry = fields.Nested(RetryOutSchema)
    next_run = ZDateTime(allow_none=True)
    last_run = ZDateTime(allow_none=True)
    run_count = fields.Integer()
    fired_count = fields.Integer()
    on_failure = fields.Nested(OnFailureOutSchema, allow_none=True)
    verification = fields.Dict(allow_none=True)
    warning = fields.String(allow_none=True)
    created_at = ZDateTime()
    updated_at = ZDateTime()


class OutcomeOutSchema(ma.Schema):
    success = fields.Boolean()
    result = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    recorded_at = ZDateTime(allow_none=True)


class ExecutionSchema(ma.Schema):
    """An execution (wire §8.1, 13 fields)."""

    id = fields.String()
    cue_id = fields.String()
    scheduled_for = ZDateTime()
    status = fields.String()
    http_status = fields.Integer(allow_none=True)
    attempts = fields.Integer()
    error_message = fields.String(allow_none=True)
    started_at = ZDateTime(allow_none=True)
    delivered_at = ZDateTime(allow_none=True)
    last_attempt_at = ZDateTime(allow_none=True)
    outcome = fields.Nested(OutcomeOutSchema, allow_none=True)
    created_at = ZDateTime()
    updated_at = ZDateTime()


class CueDetailSchema(CueSchema):
    """A cue with a page of its executions, newest first (wire §7.4)."""

    executions = fields.List(fields.Nested(ExecutionSchema))
    execution_total = fields.Integer()
    execution_limit = fields.Integer()
    execution_offset = fields.Integer()


class CueListSchema(ma.Schema):
    cues = fields.List(fields.Nested(CueSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class FiredSchema(ma.Schema):
    """A manual fire or replay: the new pending execution."""

    id = fields.String()
    cue_id = fields.String()
    scheduled_for = OffsetDateTime()
    status = fields.String()
    triggered_by = fields.String()
    replayed_from = fields.String()
    body_received = fields.Raw(allow_none=True)
    body_received_sha256 = fields.String()
