"""Request and response schemas of live sessions (wire §11.2) and IPC attachments (§11.3).

Every request body rejects unknown keys (422 naming the field): an option Cueline does not
implement is never accepted and ignored.
"""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.agents_live.models import (
    CUE_ID_MAX,
    IPC_TOKEN_MAX,
    LABEL_MAX,
    MONITOR_VERSION_MAX,
    SESSION_TOKEN_MAX,
    TASK_NAME_MAX,
)
from app.api import BaseSchema, StrictSchema, WholeMatch
from app.messaging.schemas import UTCTimestamp

#: A daemon-issued token: an optional ``v<version>_`` prefix and a 26-character ULID in
#: Crockford base32 (no I, L, O, U), 26 to 32 characters in all.
IPC_TOKEN_PATTERN = r"^(?:v[a-z0-9]+_)?[0-9A-HJKMNP-TV-Z]{26}$"
IPC_TOKEN_ERROR = ("Not a valid ipc_session_token: expected a 26-character ULID (Crockford "
                   "base32, upper case) with an optional v<version>_ prefix, 26-32 characters")
#: Most entries accepted in one reconcile (far more than a daemon holds; bounds the work).
MAX_RECONCILE_ENTRIES = 1000


class UTCInput(fields.AwareDateTime):
    """An ISO-8601 timestamp; without an offset it is UTC.  Values that do not exist in UTC
    (year 1 at ``+01:00``) are a validation error, not a 500."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ma.ValidationError("Timestamp is out of range.") from None


def _text(maximum: int, **kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=maximum), **kwargs)


def _optional_text(maximum: int) -> fields.String:
    return fields.String(allow_none=True, validate=validate.Length(max=maximum))


def _ipc_token(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(min=26, max=IPC_TOKEN_MAX),
                                   WholeMatch(IPC_TOKEN_PATTERN, error=IPC_TOKEN_ERROR)],
                         metadata={"example": "01JD3Q5Z8K2M4N6P7R9S0T1V2W"}, **kwargs)


# ---------------------------------------------------------------------------------------------
# Live sessions (§11.2)

class LiveSessionCreateSchema(StrictSchema):
    """Body of ``POST /v1/agents/{ref}/live-sessions``."""

    label = _text(LABEL_MAX, required=True,
                  metadata={"description": "Unique among the agent's active sessions"})
    cue_id = _text(CUE_ID_MAX, required=True,
                   metadata={"description": "The cue that fires at this session; bound to at "
                                            "most one active session"})
    task_name = _text(TASK_NAME_MAX, required=True)
    is_default = fields.Boolean(load_default=False)
    monitor_version = _optional_text(MONITOR_VERSION_MAX)
    session_token = _optional_text(SESSION_TOKEN_MAX)


class LiveSessionUpdateSchema(StrictSchema):
    """Body of ``PATCH …/live-sessions/{label}``: make it the default, rotate its token."""

    is_default = fields.Boolean(allow_none=True, metadata={
        "description": "Only true: the default moves here from the agent's other sessions "
                       "atomically"})
    session_token = _optional_text(SESSION_TOKEN_MAX)


class LiveSessionHeartbeatSchema(StrictSchema):
    """Optional body of ``POST …/live-sessions/{label}/heartbeat`` (``null`` is no body, as
    upstream's optional body allows)."""

    monitor_version = _optional_text(MONITOR_VERSION_MAX)

    @ma.pre_load
    def _null_is_empty(self, data, **kwargs):
        return {} if data is None else data


class LiveSessionListQuerySchema(BaseSchema):
    include_detached = fields.Boolean(load_default=False)


class LiveSessionSchema(ma.Schema):
    """A live session (``LiveSession``); ages are whole seconds, null when never seen."""

    label = fields.String(required=True)
    cue_id = fields.String(required=True)
    task_name = fields.String(required=True)
    is_default = fields.Boolean(required=True)
    attached = fields.Boolean(required=True)
    heartbeat_age_sec = fields.Integer(allow_none=True)
    last_claim_at = UTCTimestamp(allow_none=True)
    last_claim_age_sec = fields.Integer(allow_none=True)
    monitor_version = fields.String(allow_none=True)
    attached_at = UTCTimestamp(allow_none=True)
    session_token = fields.String(allow_none=True)


# ---------------------------------------------------------------------------------------------
# IPC attachments (§11.3)

class AttachmentCreateSchema(StrictSchema):
    """Body of ``POST /v1/agents/{ref}/attachments``."""

    label = _text(LABEL_MAX, required=True)
    task_name = _text(TASK_NAME_MAX, required=True)
    ipc_session_token = _ipc_token(required=True)
    attached_at = UTCInput(allow_none=True, metadata={
        "description": "The daemon's clock at attach time (default: now)"})
    monitor_version = _optional_text(MONITOR_VERSION_MAX)


class AttachmentSchema(ma.Schema):
    """An attachment as its daemon sees it (201 of the attach)."""

    id = fields.String(required=True)
    agent_id = fields.String(required=True)
    label = fields.String(required=True)
    task_name = fields.String(required=True)
    transport = fields.String(required=True)
    ipc_session_token = fields.String(required=True)
    daemon_id = fields.String(required=True)
    attached_at = UTCTimestamp(required=True)
    last_reconciled_at = UTCTimestamp(required=True)
    supersedes_token = fields.String(allow_none=True, metadata={
        "description": "The token this attach replaced (same daemon, same label)"})


class AttachmentExistsBodySchema(ma.Schema):
    code = fields.String(required=True, metadata={"example": "attachment_exists"})
    existing_token = fields.String(required=True)
    existing_daemon_id = fields.String(required=True)
    existing_attached_at = UTCTimestamp(required=True)
    existing_last_reconciled_at = UTCTimestamp(required=True, allow_none=True)
    hint = fields.String(required=True)


#: The ``error`` object of ``409 attachment_exists`` as JSON Schema (for the OpenAPI document).
_ATTACHMENT_EXISTS_JSON = {
    "type": "object",
    "required": ["code", "existing_token", "existing_daemon_id", "existing_attached_at",
                 "existing_last_reconciled_at", "hint"],
    "properties": {
        "code": {"type": "string", "enum": ["attachment_exists"]},
        "existing_token": {"type": "string"},
        "existing_daemon_id": {"type": "string", "format": "uuid"},
        "existing_attached_at": {"type": "string", "format": "date-time"},
        "existing_last_reconciled_at": {"type": "string", "format": "date-time",
                                        "nullable": True},
        "hint": {"type": "string"},
    },
}


class AttachmentConflictSchema(ma.Schema):
    """409 of an attach: ``attachment_exists`` (another daemon holds the label) in the wire's
    own shape, without ``message`` and ``status`` (§11.3); or ``live_session_conflict`` in the
    usual envelope."""

    error = fields.Raw(required=True, metadata={"oneOf": [
        _ATTACHMENT_EXISTS_JSON, {"$ref": "#/components/schemas/ErrorBody"}]})


class AttachmentDeletedSchema(ma.Schema):
    """200 of a delete that found nothing left to delete."""

    deleted = fields.Boolean(required=True)
    reason = fields.String(required=True)


class ReconcileEntrySchema(StrictSchema):
    label = _text(LABEL_MAX, required=True)
    task_name = _text(TASK_NAME_MAX, required=True)
    ipc_session_token = _ipc_token(required=True)
    attached_at = UTCInput(required=True)


class ReconcileSchema(StrictSchema):
    """Body of ``POST /v1/agents/reconcile-attachments``: the daemon's whole local view."""

    daemon_id = fields.UUID(required=True, metadata={
        "description": "Must equal the X-CueAPI-Daemon-Id header"})
    reconciled_at = UTCInput(required=True)
    attachments = fields.List(fields.Nested(ReconcileEntrySchema), load_default=list,
                              validate=validate.Length(max=MAX_RECONCILE_ENTRIES))


class ReconcileResultSchema(ma.Schema):
    daemon_id = fields.String(required=True)
    reconciled_at = UTCTimestamp(required=True)
    upserted_count = fields.Integer(required=True)
    downgraded_count = fields.Integer(required=True)
