"""Schemas of ``/v1/worker/heartbeat`` and ``/v1/workers`` (wire §9)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema
from app.scheduling.schemas.fields import ZDateTime

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
