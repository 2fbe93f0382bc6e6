"""Schemas of ``/v1/cues`` (wire §7) and of the execution objects cues embed (§8.1)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from app.api import BaseSchema, StrictSchema
from app.scheduling.models import MERGE_STRATEGIES, VERIFICATION_MODES
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


#: The flat form of ``POST /v1/cues`` (a Cueline extension; the official MCP server sends it)
#: and the nested keys it stands for.
FLAT_FIELDS = ("cron", "at", "timezone", "callback_url", "worker")
NESTED_FIELDS = ("schedule", "callback", "transport")
_FLAT_NOTE = "Flat form (Cueline extension), only when schedule/callback/transport are absent: "


class CueCreateSchema(BaseSchema):
    """``POST /v1/cues`` (unknown top-level keys ignored).

    Besides the wire form (``schedule`` / ``callback`` / ``transport``), the flat form the
    official MCP server sends is accepted: ``cron`` or ``at``, ``timezone``, ``callback_url``,
    ``worker: true``.  It is translated to the wire form before validation; mixing the two
    forms is 422.
    """

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    schedule = fields.Nested(ScheduleSchema, metadata={
        "description": "Required, unless the flat form (cron or at) is used"})
    cron = fields.String(metadata={"description": _FLAT_NOTE + "a recurring cue's cron"})
    at = fields.DateTime(metadata={"description": _FLAT_NOTE + "a once cue's time"})
    timezone = fields.String(allow_none=True, validate=validate.Length(max=64),
                             metadata={"description": _FLAT_NOTE + "schedule.timezone"})
    callback_url = fields.String(validate=validate.Length(max=2048),
                                 metadata={"description": _FLAT_NOTE + "callback.url"})
    transport = fields.String(load_default="webhook",
                              validate=validate.OneOf(("webhook", "worker")))
    callback = fields.Nested(CallbackSchema, allow_none=True)
    payload = fields.Dict(allow_none=True)
    retry = fields.Nested(RetrySchema, allow_none=True)
    on_failure = fields.Nested(OnFailureSchema, allow_none=True)
    verification = fields.Nested(VerificationSchema, allow_none=True)
    worker = fields.Boolean(metadata={
        "description": _FLAT_NOTE + "true = transport worker"})

    @ma.pre_load
    def _translate_flat_form(self, data, **kwargs):
        """Turn the flat form into the wire form (its own fields are type-checked here)."""
        if not isinstance(data, dict):
            return data
        flat = [name for name in FLAT_FIELDS if name in data]
        if not flat:
            return data
        mixed = [name for name in NESTED_FIELDS if name in data]
        if mixed:
            message = (f"Use either the flat form ({', '.join(FLAT_FIELDS)}) or "
                       f"{', '.join(NESTED_FIELDS)}, not both")
            raise ma.ValidationError({name: [message] for name in flat})
        errors = {}
        for name in flat:
            try:
                self.fields[name].deserialize(data[name], name, data)
            except ma.ValidationError as exc:
                errors[name] = exc.messages
        if "cron" in data and "at" in data:
            errors.setdefault("at", []).append(
                "Give cron (a recurring cue) or at (a once cue), not both")
        elif not errors and "cron" not in data and "at" not in data:
            errors["cron"] = ["cron (a recurring cue) or at (a once cue) is required when "
                              "schedule is absent"]
        if errors:
            raise ma.ValidationError(errors)
        wire = {k: v for k, v in data.items() if k not in FLAT_FIELDS}
        if "cron" in data:
            wire["schedule"] = {"type": "recurring", "cron": data["cron"]}
        else:
            wire["schedule"] = {"type": "once", "at": data["at"]}
        if data.get("timezone") is not None:
            wire["schedule"]["timezone"] = data["timezone"]
        if "callback_url" in data:
            wire["callback"] = {"url": data["callback_url"]}
        if "worker" in data:
            wire["transport"] = "worker" if data["worker"] else "webhook"
        return wire

    @validates_schema
    def _schedule_required(self, data, **kwargs):
        if "schedule" not in data:
            raise ma.ValidationError("Missing data for required field.", "schedule")
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


#: Fire options the hosted service knows and Cueline does not implement: refused (422) rather
#: than accepted and ignored.
UNSUPPORTED_FIRE_OPTIONS = {
    "exit_criteria": "exit_criteria (required outcome assertions) is not supported by this "
                     "server; fire without it"}


class FireSchema(StrictSchema):
    """``POST /v1/cues/{id}/fire`` (every key optional; unknown keys are 422)."""

    send_at = fields.DateTime(allow_none=True, metadata={
        "description": "Deliver at this time instead of now (naive = UTC)"})
    payload_override = fields.Dict(allow_none=True, metadata={
        "description": "Payload for this execution only (Cueline extension)"})
    merge_strategy = fields.String(allow_none=True, validate=validate.OneOf(MERGE_STRATEGIES),
                                   metadata={"description": "merge (default): shallow, the "
                                             "override wins; replace: the override alone"})
    idempotency_key = fields.String(allow_none=True, validate=validate.Length(min=1, max=256),
                                    metadata={"description": "Same key + same options within "
                                              "24 h → the same execution (Cueline extension)"})

    @ma.pre_load
    def _refuse_unsupported(self, data, **kwargs):
        if isinstance(data, dict):
            refused = {k: [v] for k, v in UNSUPPORTED_FIRE_OPTIONS.items() if k in data}
            if refused:
                raise ma.ValidationError(refused)
        return data

    @validates_schema
    def _strategy_needs_override(self, data, **kwargs):
        if data.get("merge_strategy") is not None and data.get("payload_override") is None:
            raise ma.ValidationError("merge_strategy needs a payload_override to apply",
                                     "merge_strategy")


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
