"""Schemas of ``/v1/executions`` (wire §8): listing, the pull protocol, outcomes."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema
from app.scheduling.schemas.cues import ExecutionSchema
from app.scheduling.schemas.fields import OffsetDateTime, ZDateTime

# ---------------------------------------------------------------------------------------------
# Executions


class ExecutionListQuerySchema(BaseSchema):
    cue_id = fields.String(validate=validate.Length(max=64))
    status = fields.String(validate=validate.Length(max=32))
    status__in = fields.String(validate=validate.Length(max=512))
    worker_id = fields.String(validate=validate.Length(max=255))
    outcome_state = fields.String(validate=validate.Length(max=32))
    triggered_by = fields.String(validate=validate.OneOf(
        ("scheduler", "scheduled", "manual_fire", "replay")), metadata={
            "description": "How executions were created (`scheduled` = `scheduler`)"})
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


class LiveClaimSchema(BaseSchema):
    """``POST /v1/executions/{id}/live-claim``."""

    session_token = fields.String(required=True, validate=validate.Length(min=1, max=128),
                                  metadata={"description": "The live session's token"})


class LiveClaimedSchema(ma.Schema):
    attested = fields.Boolean(required=True)
    execution_id = fields.String(required=True)
    live_claimed_at = ZDateTime(required=True)
