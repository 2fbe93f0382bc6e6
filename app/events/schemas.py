"""Request and response schemas of the event primitive (wire §11.1).

Timestamps in subscription and event responses use the ``+00:00`` spelling, as upstream.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from app.api import StrictSchema
from app.events.registry import DELIVERY_TARGETS, EVENT_TYPES, MAX_EVENT_ID
from app.scheduling.schemas.fields import OffsetDateTime

MAX_URL_LENGTH = 2048
MAX_PULL_LIMIT = 1000


class SubscriptionCreateSchema(StrictSchema):
    """Body of ``POST /v1/agents/{ref}/subscriptions`` (unknown keys → 422)."""

    event_type = fields.String(required=True, validate=validate.Length(min=1, max=255),
                               metadata={"description": "One of " + ", ".join(EVENT_TYPES)})
    delivery_target = fields.String(required=True, validate=validate.OneOf(DELIVERY_TARGETS))
    webhook_url = fields.String(allow_none=True, validate=validate.Length(max=MAX_URL_LENGTH),
                                metadata={"description": "Required for webhook, absent for "
                                                         "pull"})
    inline_body = fields.Boolean(load_default=False,
                                 metadata={"description": "Embed message bodies (≤ 32 KiB) "
                                                          "in message.delivered payloads"})


class SubscriptionSchema(ma.Schema):
    """A subscription; ``webhook_secret`` only in the create response of a webhook one."""

    id = fields.UUID(required=True)
    subscriber_agent_id = fields.String(required=True)
    event_type = fields.String(required=True)
    delivery_target = fields.String(required=True)
    webhook_url = fields.String(allow_none=True,
                                metadata={"description": "scheme://host only"})
    webhook_secret = fields.String(allow_none=True)
    inline_body = fields.Boolean(required=True)
    last_dispatched_event_id = fields.Integer(allow_none=True)
    last_dispatched_at = OffsetDateTime(allow_none=True)
    last_acked_event_id = fields.Integer(allow_none=True)
    consecutive_failures = fields.Integer(required=True)
    paused_until = OffsetDateTime(allow_none=True)
    created_at = OffsetDateTime(required=True)
    detached_at = OffsetDateTime(allow_none=True)


class SubscriptionListSchema(ma.Schema):
    subscriptions = fields.List(fields.Nested(SubscriptionSchema), required=True)


class DetachedSchema(ma.Schema):
    detached = fields.Boolean(required=True)


class AckSchema(StrictSchema):
    """Body of ``PATCH …/subscriptions/{id}/ack``."""

    acked_event_id = fields.Integer(required=True, strict=True,
                                    validate=validate.Range(min=0, max=MAX_EVENT_ID))


class AckedSchema(ma.Schema):
    acked = fields.Boolean(required=True)


class EventQuerySchema(StrictSchema):
    """Query of ``GET /v1/agents/{ref}/events`` (unknown parameters → 422)."""

    since = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_EVENT_ID),
                           metadata={"description": "Cursor: events with id > since"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_PULL_LIMIT))
    event_type = fields.String(validate=validate.Length(min=1, max=255))
    wait = fields.String(validate=validate.OneOf(["long"]),
                         metadata={"description": "long: wait up to 30 s for an event"})


class EventSchema(ma.Schema):
    id = fields.Integer(required=True)
    event_type = fields.String(required=True)
    recipient_agent_id = fields.String(required=True)
    payload = fields.Dict(required=True)
    emitted_at = OffsetDateTime(required=True)


class EventPageSchema(ma.Schema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_cursor = fields.Integer(allow_none=True)
    has_more = fields.Boolean(required=True)
