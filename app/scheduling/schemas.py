"""Request and response schemas of cues, executions and workers (wire §7–§9).

Request schemas check shapes and types only; rules whose wire errors are not ``422
validation_error`` (unknown time zone, bad schedule, SSRF, payload size) live in the services so
they run in the spec's validation order.  Response schemas dump the plain dicts built by
``app.scheduling.presenters``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from app.api import BaseSchema, StrictSchema
from app.scheduling.models import CALLBACK_METHODS, VERIFICATION_MODES

MAX_BACKOFF_MINUTES = 7 * 24 * 60


# ---------------------------------------------------------------------------------------------
# Field types


class ZDateTime(fields.DateTime):
    """UTC timestamp written ``2026-05-12T09:00:00.123456Z`` (microseconds only when non-zero)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        text = value.replace(tzinfo=None).isoformat()
        return text + "Z"


class OffsetDateTime(fields.DateTime):
    """UTC timestamp written with ``+00:00`` (the hand-built spelling of wire §1.5)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class HttpMethod(fields.String):
    """An HTTP method for ``callback.method``: case-insensitive, one of POST/GET/PUT/PATCH."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).upper()
        if text not in CALLBACK_METHODS:
            raise ma.ValidationError(f"Must be one of: {', '.join(CALLBACK_METHODS)}.")
        return text


class JSONObject(fields.Dict):
    """A JSON object (``null`` allowed where the field says so)."""


#: An HTTP header name (RFC 9110 token) and a value without control characters: anything else
#: could not be sent, so it is refused when the cue is saved rather than at every delivery.
_HEADER_NAME = validate.Regexp(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$",
                               error="Not a valid HTTP header name.")
_HEADER_VALUE = validate.Regexp(r"^[^\x00-\x08\x0a-\x1f\x7f]{0,8192}$",
                                error="Header values must not contain control characters.")


def _str_map(**kwargs):
    return fields.Dict(keys=fields.String(validate=_HEADER_NAME),
                       values=fields.String(validate=_HEADER_VALUE),
                       validate=validate.Length(max=50), **kwargs)


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
    headers = _str_map(allow_none=True)
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
    payload = JSONObject(allow_none=True)
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
    payload = JSONObject(allow_none=True)
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


# ---------------------------------------------------------------------------------------------
# Executions


class ExecutionListQuerySchema(BaseSchema):
    cue_id = fields.String(validate=validate.Length(max=64))
    status = fields.String(validate=validate.Length(max=32))
    status__in = fields.String(validate=validate.Length(max=512))
    worker_id = fields.String(validate=validate.Length(max=255))
    outcome_state = fields.String(validate=validate.Length(max=32))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class ExecutionListSchema(ma.Schema):
    executions = fields.List(fields.Nested(ExecutionSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    has_more = fields.Boolean()
    oldest_claimed_at = OffsetDateTime(allow_none=True)


class ClaimableQuerySchema(BaseSchema):
    task = fields.String(validate=validate.Length(max=255))


class ClaimableSchema(ma.Schema):
    execution_id = fields.String()
    cue_id = fields.String()
    cue_name = fields.String()
    task = fields.String(allow_none=True)
    scheduled_for = ZDateTime()
    payload = fields.Dict()
    attempt = fields.Integer()


class ClaimableListSchema(ma.Schema):
    executions = fields.List(fields.Nested(ClaimableSchema))


class ClaimSchema(BaseSchema):
    worker_id = fields.String(required=True, validate=validate.Length(min=1, max=255))


class ClaimedSchema(ma.Schema):
    claimed = fields.Boolean()
    execution_id = fields.String()
    lease_seconds = fields.Integer()


class HeartbeatAckSchema(ma.Schema):
    execution_id = fields.String()
    lease_extended_until = OffsetDateTime()
    acknowledged = fields.Boolean()


class OutcomeSchema(BaseSchema):
    """``POST /v1/executions/{id}/outcome``."""

    success = fields.Boolean(required=True)
    result = fields.String(allow_none=True, validate=validate.Length(max=2000))
    error = fields.String(allow_none=True, validate=validate.Length(max=2000))
    metadata = fields.Dict(allow_none=True)
    external_id = fields.String(allow_none=True, validate=validate.Length(max=500))
    result_url = fields.Url(allow_none=True, schemes={"http", "https"}, require_tld=False,
                            validate=validate.Length(max=2048))
    result_ref = fields.String(allow_none=True, validate=validate.Length(max=500))
    result_type = fields.String(allow_none=True, validate=validate.Length(max=100))
    summary = fields.String(allow_none=True, validate=validate.Length(max=500))
    artifacts = fields.List(fields.Raw(), allow_none=True)


class OutcomeRecordedSchema(ma.Schema):
    execution_id = fields.String()
    outcome_recorded = fields.Boolean()
    outcome_state = fields.String()
    reason = fields.String(allow_none=True)


class VerifySchema(BaseSchema):
    valid = fields.Boolean(load_default=True)
    reason = fields.String(allow_none=True, validate=validate.Length(max=500))


class VerifiedSchema(ma.Schema):
    execution_id = fields.String()
    outcome_state = fields.String()
    valid = fields.Boolean()
    reason = fields.String(allow_none=True)


class EvidenceSchema(BaseSchema):
    external_id = fields.String(allow_none=True, validate=validate.Length(max=500))
    result_url = fields.Url(allow_none=True, schemes={"http", "https"}, require_tld=False,
                            validate=validate.Length(max=2048))
    result_ref = fields.String(allow_none=True, validate=validate.Length(max=500))
    result_type = fields.String(allow_none=True, validate=validate.Length(max=100))
    summary = fields.String(allow_none=True, validate=validate.Length(max=500))
    artifacts = fields.List(fields.Raw(), allow_none=True)
    metadata = fields.Dict(allow_none=True)


class OutcomeStateSchema(ma.Schema):
    execution_id = fields.String()
    outcome_state = fields.String()
    evidence_updated = fields.Boolean()


# ---------------------------------------------------------------------------------------------
# Workers


class WorkerHeartbeatSchema(BaseSchema):
    worker_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    handlers = fields.List(fields.String(validate=validate.Length(max=255)), allow_none=True,
                           validate=validate.Length(max=500))


class WorkerHeartbeatAckSchema(ma.Schema):
    acknowledged = fields.Boolean()
    server_time = ZDateTime()


class WorkerSchema(ma.Schema):
    worker_id = fields.String()
    last_heartbeat = ZDateTime()
    seconds_since_heartbeat = fields.Integer()
    heartbeat_status = fields.String()
    handlers = fields.List(fields.String(), allow_none=True)
    registered_since = ZDateTime()


class WorkerListSchema(ma.Schema):
    workers = fields.List(fields.Nested(WorkerSchema))


def utc_now_text(now: datetime) -> str:
    """``now`` in the ``+00:00`` spelling (for headers and webhook bodies)."""
    return now.astimezone(UTC).isoformat()
