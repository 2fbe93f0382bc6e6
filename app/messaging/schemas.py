"""Request and response schemas of the messaging primitive (agents, messages, inbox)."""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema, StrictSchema, WholeMatch
from app.messaging.models import AGENT_STATUSES

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
MESSAGE_ID_PATTERN = r"^msg_[a-z0-9]{12}$"
MAX_BODY_CHARS = 32768
MAX_URL_LENGTH = 2048
#: Largest ``offset`` accepted (beyond a 32-bit integer PostgreSQL would refuse it with a 500).
MAX_OFFSET = 2**31 - 1


class UTCTimestamp(fields.DateTime):
    """Output: RFC 3339 in UTC with a ``Z`` suffix (the spelling CueAPI's models use)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _input_datetime(**kwargs) -> fields.AwareDateTime:
    """An ISO-8601 input; a timestamp without an offset is taken as UTC (upstream 500s)."""
    return fields.AwareDateTime(default_timezone=UTC, **kwargs)


# ---------------------------------------------------------------------------------------------
# Agents

class AgentCreateSchema(StrictSchema):
    """Body of ``POST /v1/agents`` (unknown keys → 422, as upstream)."""

    display_name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    slug = fields.String(validate=[validate.Length(min=1, max=64),
                                   WholeMatch(SLUG_PATTERN, error=(
                                       "Slug must be 1-64 lowercase letters, digits or inner "
                                       "hyphens"))])
    webhook_url = fields.String(allow_none=True, validate=validate.Length(max=MAX_URL_LENGTH))
    metadata = fields.Dict(keys=fields.String())


class AgentUpdateSchema(StrictSchema):
    """Body of ``PATCH /v1/agents/{ref}``; ``webhook_url: null`` clears the URL and secret."""

    display_name = fields.String(validate=validate.Length(min=1, max=255))
    webhook_url = fields.String(allow_none=True, validate=validate.Length(max=MAX_URL_LENGTH))
    status = fields.String(validate=validate.OneOf(AGENT_STATUSES))
    metadata = fields.Dict(keys=fields.String())


class AgentSchema(ma.Schema):
    """An agent (``AgentResponse``); ``webhook_secret`` is set only in the create response."""

    id = fields.String(required=True)
    user_id = fields.UUID(required=True)
    slug = fields.String(required=True)
    display_name = fields.String(required=True)
    webhook_url = fields.String(allow_none=True)
    webhook_secret = fields.String(allow_none=True)
    metadata = fields.Dict(attribute="meta")
    status = fields.String(required=True)
    deleted_at = UTCTimestamp(allow_none=True)
    created_at = UTCTimestamp(required=True)
    updated_at = UTCTimestamp(required=True)


class AgentListQuerySchema(BaseSchema):
    status = fields.String(metadata={"description": "online, offline or away"})
    include_deleted = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


class AgentListSchema(ma.Schema):
    agents = fields.List(fields.Nested(AgentSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class IncludeDeletedQuerySchema(BaseSchema):
    include_deleted = fields.Boolean(load_default=False)


class RosterEntrySchema(ma.Schema):
    name = fields.String(required=True)
    display_name = fields.String(required=True)
    description = fields.String(allow_none=True)
    online = fields.Boolean(required=True)
    last_seen_relative = fields.String(required=True)
    preferred_contact = fields.String(required=True)
    status = fields.String(required=True)


class RosterSchema(ma.Schema):
    generated_at = UTCTimestamp(required=True)
    agents = fields.List(fields.Nested(RosterEntrySchema), required=True)


class AgentWebhookSecretSchema(ma.Schema):
    webhook_secret = fields.String(required=True)


# ---------------------------------------------------------------------------------------------
# Messages

class MessageCreateSchema(StrictSchema):
    """Body of ``POST /v1/messages`` (unknown keys → 422, as upstream)."""

    to = fields.String(required=True, validate=validate.Length(min=1, max=255))
    body = fields.String(required=True, validate=validate.Length(min=1, max=MAX_BODY_CHARS))
    subject = fields.String(allow_none=True, validate=validate.Length(max=255))
    reply_to = fields.String(allow_none=True, validate=WholeMatch(
        MESSAGE_ID_PATTERN, error="Must be a message id (msg_ followed by 12 characters)"))
    priority = fields.Integer(load_default=3, strict=True, validate=validate.Range(min=1, max=5))
    expects_reply = fields.Boolean(load_default=False)
    reply_to_agent = fields.String(allow_none=True, validate=validate.Length(min=1, max=255))
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    correlation_id = fields.String(allow_none=True, validate=validate.Length(max=255))
    send_at = _input_datetime(allow_none=True)

    @ma.validates("body")
    def _body_bytes(self, value: str, **_kwargs) -> None:
        # The column limit is in bytes; upstream let multi-byte bodies through to a 500.
        size = len(value.encode("utf-8"))
        if size > MAX_BODY_CHARS:
            raise ma.ValidationError(
                f"Body is {size} bytes in UTF-8; the limit is {MAX_BODY_CHARS} bytes")


class MessageSchema(ma.Schema):
    """A message (``MessageResponse``)."""

    id = fields.String(required=True)
    user_id = fields.UUID(required=True)
    from_agent_id = fields.String(required=True)
    to_agent_id = fields.String(required=True)
    thread_id = fields.String(required=True)
    reply_to = fields.String(allow_none=True)
    subject = fields.String(allow_none=True)
    body = fields.String(required=True)
    preview = fields.Method("_preview")
    priority = fields.Integer(required=True)
    expects_reply = fields.Boolean(required=True)
    reply_to_agent_id = fields.String(allow_none=True)
    delivery_state = fields.String(required=True)
    metadata = fields.Dict(attribute="meta")
    idempotency_key = fields.String(allow_none=True)
    created_at = UTCTimestamp(required=True)
    delivered_at = UTCTimestamp(allow_none=True)
    read_at = UTCTimestamp(allow_none=True)
    acked_at = UTCTimestamp(allow_none=True)
    failed_at = UTCTimestamp(allow_none=True)
    send_at = UTCTimestamp(allow_none=True)
    expires_at = UTCTimestamp(required=True)
    correlation_id = fields.String(allow_none=True)
    dispatch_priority_bucket = fields.Integer(allow_none=True)
    message_dispatch_error = fields.String(allow_none=True)

    def _preview(self, message) -> str:
        return message.body[:200]


class SentMessageSchema(MessageSchema):
    """The send response: a message plus the optional verify-echo fields (§1.10)."""

    body_received = fields.String(allow_none=True)
    body_received_sha256 = fields.String()


class MessageListQuerySchema(BaseSchema):
    state = fields.String(metadata={"description": "Comma-separated delivery states"})
    since = _input_datetime()
    thread_id = fields.String(validate=validate.Length(max=64))
    counterpart = fields.String(validate=validate.Length(max=255))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    count_only = fields.Boolean(load_default=False)


class MessageListSchema(ma.Schema):
    messages = fields.List(fields.Nested(MessageSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    count = fields.Integer()


class StateTransitionSchema(ma.Schema):
    delivery_state = fields.String(required=True)
    read_at = UTCTimestamp(allow_none=True)
    acked_at = UTCTimestamp(allow_none=True)
