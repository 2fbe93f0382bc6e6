"""Schemas of ``GET /v1/alerts`` and of the alert-webhook secret endpoints."""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.alerts.models import ALERT_TYPES
from app.api import BaseSchema
from app.scheduling.schemas.fields import ZDateTime


class AlertListQuerySchema(BaseSchema):
    # A free string: an unknown type is ``400 invalid_filter`` (wire §12.6), not a 422.
    alert_type = fields.String(validate=validate.Length(max=64), metadata={
        "description": f"One of {', '.join(ALERT_TYPES)}"})
    since = fields.AwareDateTime(default_timezone=UTC, metadata={
        "description": "Only alerts created at or after this time (naive = UTC)"})
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class AlertSchema(ma.Schema):
    """An alert (wire §12.6)."""

    id = fields.String(required=True)
    cue_id = fields.String(allow_none=True)
    execution_id = fields.String(allow_none=True)
    alert_type = fields.String(required=True, metadata={"enum": list(ALERT_TYPES)})
    severity = fields.String(required=True, metadata={"enum": ["info", "warning", "critical"]})
    message = fields.String(required=True)
    metadata = fields.Dict(allow_none=True)
    acknowledged = fields.Boolean(required=True)
    created_at = ZDateTime(required=True)


class AlertListSchema(ma.Schema):
    alerts = fields.List(fields.Nested(AlertSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class AlertWebhookSecretSchema(ma.Schema):
    alert_webhook_secret = fields.String(required=True, metadata={
        "description": "64 hex characters; the HMAC key of X-CueAPI-Signature on alert "
                       "webhooks"})


class RegeneratedAlertWebhookSecretSchema(AlertWebhookSecretSchema):
    previous_secret_revoked = fields.Boolean(required=True)
