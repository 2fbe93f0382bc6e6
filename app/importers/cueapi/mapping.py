"""cueapi-core values → Cueline values, row by row.

The enumerations below are cueapi-core's own (its CHECK constraints and the values its code
writes, as of its migration 035); every one maps to the same word in Cueline, which a test
checks against Cueline's models.  A value outside them (a hand-edited row) is not guessed at:
the row is refused with ``unknown_value``.

Renamed or reshaped on the way:

* ``cues.callback_transport`` → ``transport``; ``executions.next_retry`` → ``next_retry_at``;
  ``agents.agent_metadata`` / ``messages.message_metadata`` → ``metadata``.
* ``executions.triggered_by`` NULL (the scheduler) → ``scheduler``.
* ``executions.outcome_*`` → the ``outcome`` object; a recorded outcome without an
  ``outcome_state`` (older rows, or a database built by the migrations, which lack the column)
  gets ``reported_success`` / ``reported_failure``, which is what cueapi-core answered for it.
* ``executions.evidence_*`` → the ``evidence`` object Cueline keeps (the same keys as the
  outcome and evidence request bodies).
* ``usage_monthly.month_start`` (a date) → ``execution_usage.month`` (``YYYY-MM``).
* message push state: the latest ``dispatch_outbox`` row of a message still in flight gives
  Cueline's ``push_attempts`` / ``next_attempt_at``; ``delivering_started_at`` →
  ``claimed_at``.
* ``alerts`` keep their ids; Cueline's ``delivery_state`` stays NULL (never sent again).
* ``events.priority`` (Cueline only) is the ``message.delivered`` payload's priority.
* ``agent_live_sessions``: a NULL ``attached_at`` → ``created_at``; a detached session is not
  the default.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from app.agents_live.models import TRANSPORTS as LIVE_TRANSPORTS
from app.alerts.models import ALERT_TYPES, SEVERITIES
from app.errors import AppError
from app.events.registry import DELIVERY_TARGETS, EVENT_TYPES, MESSAGE_DELIVERED
from app.messaging.addressing import parse_address
from app.messaging.models import AGENT_STATUSES, DELIVERY_STATES
from app.messaging.services.messages import fingerprint
from app.scheduling.models import (
    CALLBACK_METHODS,
    CUE_STATUSES,
    EXECUTION_STATUSES,
    OUTCOME_STATES,
    SCHEDULE_TYPES,
    TRANSPORTS,
    TRIGGERS,
    VERIFICATION_MODES,
)
from app.scheduling.schedule import zone
from app.users.models import DEFAULT_MONTHLY_MESSAGE_LIMIT
from app.users.services import normalize_email

# cueapi-core's enumerations (CHECK constraints of its migrations 001-035 and its code).
UPSTREAM_CUE_STATUSES = ("active", "paused", "completed", "failed")
UPSTREAM_SCHEDULE_TYPES = ("once", "recurring")
UPSTREAM_CALLBACK_METHODS = ("POST", "GET", "PUT", "PATCH")
UPSTREAM_TRANSPORTS = ("webhook", "worker")
UPSTREAM_VERIFICATION_MODES = ("none", "require_external_id", "require_result_url",
                               "require_artifacts", "manual")
UPSTREAM_EXECUTION_STATUSES = ("pending", "delivering", "success", "failed", "retrying",
                               "retry_ready", "missed", "pending_outcome", "outcome_timeout")
UPSTREAM_OUTCOME_STATES = ("reported_success", "reported_failure", "verified_success",
                           "verification_pending", "verification_failed")
#: ``executions.triggered_by``: NULL for the scheduler's executions.
UPSTREAM_TRIGGERS = {None: "scheduler", "manual_fire": "manual_fire", "replay": "replay"}
UPSTREAM_AGENT_STATUSES = ("online", "offline", "away")
UPSTREAM_DELIVERY_STATES = ("queued", "delivering", "retry_ready", "delivered", "read",
                            "claimed", "acked", "expired", "failed")
UPSTREAM_ALERT_TYPES = ("outcome_timeout", "verification_failed", "consecutive_failures")
UPSTREAM_SEVERITIES = ("info", "warning", "critical")
#: The event-type registry (``KNOWN_EVENT_TYPES``) and the subscription targets.
UPSTREAM_EVENT_TYPES = ("message.delivered", "message.digest", "turn.pass")
UPSTREAM_DELIVERY_TARGETS = ("pull", "webhook")
UPSTREAM_LIVE_TRANSPORTS = ("poll", "ipc")

#: Upstream value set → the Cueline set it must map into (checked by the tests).
ENUMERATIONS = {
    "cues.status": (UPSTREAM_CUE_STATUSES, CUE_STATUSES),
    "cues.schedule_type": (UPSTREAM_SCHEDULE_TYPES, SCHEDULE_TYPES),
    "cues.callback_method": (UPSTREAM_CALLBACK_METHODS, CALLBACK_METHODS),
    "cues.callback_transport": (UPSTREAM_TRANSPORTS, TRANSPORTS),
    "cues.verification_mode": (UPSTREAM_VERIFICATION_MODES, VERIFICATION_MODES),
    "executions.status": (UPSTREAM_EXECUTION_STATUSES, EXECUTION_STATUSES),
    "executions.outcome_state": (UPSTREAM_OUTCOME_STATES, OUTCOME_STATES),
    "executions.triggered_by": (tuple(UPSTREAM_TRIGGERS.values()), TRIGGERS),
    "agents.status": (UPSTREAM_AGENT_STATUSES, AGENT_STATUSES),
    "messages.delivery_state": (UPSTREAM_DELIVERY_STATES, DELIVERY_STATES),
    "alerts.alert_type": (UPSTREAM_ALERT_TYPES, ALERT_TYPES),
    "alerts.severity": (UPSTREAM_SEVERITIES, SEVERITIES),
    "events.event_type": (UPSTREAM_EVENT_TYPES, EVENT_TYPES),
    "subscriptions.event_type": (UPSTREAM_EVENT_TYPES, EVENT_TYPES),
    "subscriptions.delivery_target": (UPSTREAM_DELIVERY_TARGETS, DELIVERY_TARGETS),
    "agent_live_sessions.transport": (UPSTREAM_LIVE_TRANSPORTS, LIVE_TRANSPORTS),
}

#: Evidence columns → the keys of Cueline's ``evidence`` object.
EVIDENCE_COLUMNS = {"evidence_external_id": "external_id", "evidence_result_url": "result_url",
                    "evidence_result_ref": "result_ref", "evidence_result_type": "result_type",
                    "evidence_summary": "summary", "evidence_artifacts": "artifacts"}

#: Message states a push may still be pending or running in.
IN_FLIGHT = ("queued", "retry_ready", "delivering")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class Unmappable(Exception):
    """A source row that cannot be stored in Cueline as it is (``code``, ``message``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _member(table_column: str, value: Any) -> Any:
    upstream, _cueline = ENUMERATIONS[table_column]
    if value not in upstream:
        raise Unmappable("unknown_value", f"{table_column} {value!r} is not a value cueapi-core "
                                          "writes; Cueline has no equivalent")
    return value


def addressable(ref: str) -> bool:
    """Does Cueline accept ``ref`` (an agent id, or ``slug@user-slug``) as an address?"""
    try:
        parse_address(ref)
    except AppError:
        return False
    return True


def user(r: dict[str, Any]) -> dict[str, Any]:
    """A ``users`` row.  The API key is carried as cueapi-core stores it: the SHA-256 of the
    whole key (what Cueline looks keys up by) and its first 12 characters."""
    key_hash = r["api_key_hash"] or ""
    if not _HEX64.fullmatch(key_hash):
        raise Unmappable("api_key_unverifiable",
                         "users.api_key_hash is not a SHA-256 hex digest, so Cueline could "
                         "never match this user's key")
    return {
        "id": r["id"], "email": normalize_email(r["email"]), "slug": r["slug"],
        "plan": r["plan"], "active_cue_limit": r["active_cue_limit"],
        "monthly_execution_limit": r["monthly_execution_limit"],
        "monthly_message_limit": (r["monthly_message_limit"]
                                  if r["monthly_message_limit"] is not None
                                  else DEFAULT_MONTHLY_MESSAGE_LIMIT),
        "rate_limit_per_minute": r["rate_limit_per_minute"],
        "api_key_hash": key_hash.lower(), "api_key_prefix": r["api_key_prefix"],
        "api_key_encrypted": r["api_key_encrypted"], "webhook_secret": r["webhook_secret"],
        "external_owner": r["external_owner"],
        # Both sides keep the alert webhook's signing secret itself: receivers keep verifying.
        "alert_webhook_url": r["alert_webhook_url"] or None,
        "alert_webhook_secret": r["alert_webhook_secret"] or None,
        "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def cue(r: dict[str, Any]) -> dict[str, Any]:
    """A ``cues`` row; its schedule must be one Cueline's scheduler can evaluate."""
    schedule_type = _member("cues.schedule_type", r["schedule_type"])
    try:
        zone(r["schedule_timezone"])
    except AppError:
        raise Unmappable("invalid_timezone", f"cues.schedule_timezone "
                                             f"{r['schedule_timezone']!r} is not an IANA time "
                                             "zone this machine knows") from None
    if schedule_type == "recurring" and not (r["schedule_cron"]
                                             and croniter.is_valid(r["schedule_cron"])):
        raise Unmappable("invalid_schedule", f"cues.schedule_cron {r['schedule_cron']!r} is not "
                                             "a cron expression Cueline can evaluate")
    if schedule_type == "once" and r["schedule_at"] is None:
        raise Unmappable("invalid_schedule", "a once cue without schedule_at")
    headers = r["callback_headers"] if r["callback_headers"] is not None else {}
    if not isinstance(headers, dict):
        raise Unmappable("invalid_value", "cues.callback_headers is not a JSON object")
    mode = r["verification_mode"]
    return {
        "id": r["id"], "user_id": r["user_id"], "name": r["name"],
        "description": r["description"], "status": _member("cues.status", r["status"]),
        "transport": _member("cues.callback_transport", r["callback_transport"] or "webhook"),
        "schedule_type": schedule_type, "schedule_cron": r["schedule_cron"],
        "schedule_at": r["schedule_at"], "schedule_timezone": r["schedule_timezone"],
        "callback_url": r["callback_url"],
        "callback_method": _member("cues.callback_method", r["callback_method"]),
        "callback_headers": headers,
        "payload": r["payload"] if r["payload"] is not None else {},
        "retry_max_attempts": r["retry_max_attempts"],
        "retry_backoff_minutes": r["retry_backoff_minutes"],
        "on_failure": r["on_failure"],
        "verification_mode": mode if mode is None else _member("cues.verification_mode", mode),
        "next_run": r["next_run"], "last_run": r["last_run"],
        "run_count": r["run_count"], "fired_count": r["fired_count"] or 0,
        "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def execution(r: dict[str, Any]) -> dict[str, Any]:
    """An ``executions`` row with its outcome and evidence objects."""
    outcome = None
    state = r["outcome_state"]
    if r["outcome_recorded_at"] is not None:
        outcome = {"success": r["outcome_success"], "result": r["outcome_result"],
                   "error": r["outcome_error"], "metadata": r["outcome_metadata"],
                   "recorded_at": _iso(r["outcome_recorded_at"])}
        if state is None:
            state = "reported_success" if r["outcome_success"] else "reported_failure"
    if state is not None:
        _member("executions.outcome_state", state)
    if r["triggered_by"] not in UPSTREAM_TRIGGERS:
        raise Unmappable("unknown_value", f"executions.triggered_by {r['triggered_by']!r} is "
                                          "not a value cueapi-core writes")
    evidence = {key: r[column] for column, key in EVIDENCE_COLUMNS.items() if r[column]}
    if r["evidence_metadata"]:
        evidence["metadata"] = r["evidence_metadata"]
    return {
        "id": r["id"], "cue_id": r["cue_id"], "scheduled_for": r["scheduled_for"],
        "status": _member("executions.status", r["status"]),
        "triggered_by": UPSTREAM_TRIGGERS[r["triggered_by"]], "replayed_from": None,
        "http_status": r["http_status"], "attempts": r["attempts"],
        "error_message": r["error_message"], "response_body": r["response_body"],
        "started_at": r["started_at"], "delivered_at": r["delivered_at"],
        "last_attempt_at": r["last_attempt_at"], "next_retry_at": r["next_retry"],
        "claimed_by_worker": r["claimed_by_worker"], "claimed_at": r["claimed_at"],
        "last_heartbeat_at": r["last_heartbeat_at"], "outcome": outcome,
        "outcome_state": state, "evidence": evidence or None,
        "live_claim_session_token": r["live_claim_session_token"],
        "live_claimed_at": r["live_claimed_at"],
        "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def worker(r: dict[str, Any]) -> dict[str, Any]:
    """A ``workers`` row."""
    handlers = r["handlers"]
    if handlers is not None and not isinstance(handlers, list):
        raise Unmappable("invalid_value", "workers.handlers is not a JSON array")
    return {"id": r["id"], "user_id": r["user_id"], "worker_id": r["worker_id"],
            "handlers": handlers, "last_heartbeat": r["last_heartbeat"],
            "created_at": r["created_at"]}


def agent(r: dict[str, Any]) -> dict[str, Any]:
    """An ``agents`` row (soft-deleted ones too: their messages stay readable)."""
    metadata = r["agent_metadata"] if r["agent_metadata"] is not None else {}
    return {"id": r["id"], "user_id": r["user_id"], "slug": r["slug"],
            "display_name": r["display_name"], "webhook_url": r["webhook_url"],
            "webhook_secret": r["webhook_secret"], "metadata": metadata,
            "status": _member("agents.status", r["status"]),
            "last_seen_at": r["last_seen_at"], "deleted_at": r["deleted_at"],
            "created_at": r["created_at"], "updated_at": r["updated_at"]}


def message(r: dict[str, Any], push: tuple[int, datetime | None] | None) -> dict[str, Any]:
    """A ``messages`` row; ``push`` is ``(attempt, scheduled_at)`` of its latest push job
    (``dispatch_outbox``) when it is still in flight, else None."""
    state = _member("messages.delivery_state", r["delivery_state"])
    if not 1 <= (r["priority"] or 0) <= 5:
        raise Unmappable("invalid_value", f"messages.priority {r['priority']!r} is not 1-5")
    attempts, next_attempt_at, claimed_at = 0, None, None
    if state in ("queued", "retry_ready") and push is not None:
        attempt, scheduled_at = push
        attempts = max(attempt - 1, 0)
        next_attempt_at = scheduled_at or r["send_at"] or r["created_at"]
    elif state == "delivering":
        attempts = push[0] if push is not None else 1
        claimed_at = r["delivering_started_at"] or r["created_at"]
    return {
        "id": r["id"], "user_id": r["user_id"], "to_user_id": r["_to_user_id"],
        "from_agent_id": r["from_agent_id"], "to_agent_id": r["to_agent_id"],
        "thread_id": r["thread_id"], "reply_to": r["reply_to"], "subject": r["subject"],
        "body": r["body"], "priority": r["priority"], "requested_priority": r["priority"],
        "expects_reply": bool(r["expects_reply"]), "reply_to_agent_id": r["reply_to_agent_id"],
        "delivery_state": state,
        "metadata": r["message_metadata"] if r["message_metadata"] is not None else {},
        "idempotency_key": r["idempotency_key"], "correlation_id": r["correlation_id"],
        "dispatch_priority_bucket": r["dispatch_priority_bucket"],
        "message_dispatch_error": r["message_dispatch_error"],
        "created_at": r["created_at"], "delivered_at": r["delivered_at"],
        "read_at": r["read_at"], "acked_at": r["acked_at"], "failed_at": r["failed_at"],
        "send_at": r["send_at"], "expires_at": r["expires_at"],
        "push_attempts": attempts, "next_attempt_at": next_attempt_at,
        "claimed_at": claimed_at,
    }


def idempotency_key(r: dict[str, Any]) -> dict[str, Any]:
    """A spent ``Idempotency-Key`` still inside its 24 h window.

    Its fingerprint is recomputed the way Cueline computes a send's (cueapi-core serialised
    the same fields with other separators), so a client retrying the send gets the message
    back instead of ``409 idempotency_key_conflict``.
    """
    metadata = r["message_metadata"] if r["message_metadata"] is not None else {}
    digest = fingerprint(r["to_agent_id"], {"body": r["body"], "subject": r["subject"],
                                            "priority": r["priority"],
                                            "reply_to": r["reply_to"], "metadata": metadata})
    return {"user_id": r["user_id"], "key": r["idempotency_key"], "message_id": r["id"],
            "fingerprint": digest, "created_at": r["created_at"]}


def execution_usage(r: dict[str, Any]) -> dict[str, Any]:
    """A ``usage_monthly`` row (successful webhook deliveries of one calendar month)."""
    month = r["month_start"]
    if month.day != 1:
        raise Unmappable("invalid_value", f"usage_monthly.month_start {month} is not the first "
                                          "day of a month")
    return {"user_id": r["user_id"], "month": month.strftime("%Y-%m"),
            "executions": r["execution_count"]}


def message_count(r: dict[str, Any]) -> dict[str, Any]:
    """A ``usage_messages_monthly`` row (messages sent in one calendar month)."""
    month = r["month_start"]
    if month.day != 1:
        raise Unmappable("invalid_value", f"usage_messages_monthly.month_start {month} is not "
                                          "the first day of a month")
    return {"user_id": r["user_id"], "month": month, "count": r["message_count"]}


def alert(r: dict[str, Any]) -> dict[str, Any]:
    """An ``alerts`` row.  Cueline's ``delivery_state`` stays NULL: cueapi-core sent (or did not
    send) the alert when it was raised, and an imported alert must not be sent again."""
    metadata = r["metadata"]
    if metadata is not None and not isinstance(metadata, dict):
        raise Unmappable("invalid_value", "alerts.metadata is not a JSON object")
    return {"id": r["id"], "user_id": r["user_id"], "cue_id": r["cue_id"],
            "execution_id": r["execution_id"],
            "alert_type": _member("alerts.alert_type", r["alert_type"]),
            "severity": _member("alerts.severity", r["severity"]), "message": r["message"],
            "metadata": metadata, "acknowledged": bool(r["acknowledged"]),
            "created_at": r["created_at"]}


def subscription(r: dict[str, Any]) -> dict[str, Any]:
    """A ``subscriptions`` row: same id, watermarks (event ids are kept, so they stay
    consistent), circuit-breaker state and webhook secret (stored as itself on both sides)."""
    target = _member("subscriptions.delivery_target", r["delivery_target"])
    if (target == "webhook") != (r["webhook_url"] is not None):
        raise Unmappable("invalid_value", "a webhook subscription needs a webhook_url and a "
                                          "pull subscription has none")
    if target == "webhook" and not r["webhook_secret"]:
        raise Unmappable("missing_value", "a webhook subscription without a webhook_secret "
                                          "(Cueline never sends unsigned)")
    return {"id": r["id"], "subscriber_agent_id": r["subscriber_agent_id"],
            "event_type": _member("subscriptions.event_type", r["event_type"]),
            "delivery_target": target, "webhook_url": r["webhook_url"],
            "webhook_secret": r["webhook_secret"] if target == "webhook" else None,
            "inline_body": bool(r["inline_body"]),
            "last_dispatched_event_id": r["last_dispatched_event_id"],
            "last_dispatched_at": r["last_dispatched_at"],
            "last_acked_event_id": r["last_acked_event_id"],
            "consecutive_failures": r["consecutive_failures"] or 0,
            "paused_until": r["paused_until"], "created_at": r["created_at"],
            "detached_at": r["detached_at"]}


def event(r: dict[str, Any]) -> dict[str, Any]:
    """An ``events`` row with its id (the pull cursor) kept.  ``priority`` (which Cueline's
    digest and debounce read) is the payload's, for ``message.delivered`` events."""
    payload = r["payload"] if r["payload"] is not None else {}
    if not isinstance(payload, dict):
        raise Unmappable("invalid_value", "events.payload is not a JSON object")
    event_type = _member("events.event_type", r["event_type"])
    priority = payload.get("priority") if event_type == MESSAGE_DELIVERED else None
    if not (isinstance(priority, int) and not isinstance(priority, bool)
            and 1 <= priority <= 5):
        priority = None
    return {"id": r["id"], "event_type": event_type,
            "recipient_agent_id": r["recipient_agent_id"], "payload": payload,
            "emitted_at": r["emitted_at"], "idempotency_key": r["idempotency_key"],
            "priority": priority, "digested_at": r["digested_at"]}


def live_session(r: dict[str, Any]) -> dict[str, Any]:
    """An ``agent_live_sessions`` row.

    Cueline states as constraints what cueapi-core's code only keeps to: a detached session is
    not the default (its flag is cleared), an ``ipc`` session has its daemon and token, and a
    daemon comes with its token (a row breaking those is refused).  ``attached_at`` (NULL in
    rows older than cueapi-core recorded it) becomes ``created_at``.
    """
    transport = _member("agent_live_sessions.transport", r["transport"] or "poll")
    if (r["daemon_id"] is None) != (r["ipc_session_token"] is None):
        raise Unmappable("invalid_value", "agent_live_sessions.daemon_id and ipc_session_token "
                                          "are set together")
    if transport == "ipc" and r["daemon_id"] is None:
        raise Unmappable("invalid_value", "an ipc live session without its daemon")
    detached = r["detached_at"]
    return {"id": r["id"], "agent_id": r["agent_id"], "label": r["label"],
            "cue_id": r["cue_id"], "task_name": r["task_name"],
            "is_default": bool(r["is_default"]) and detached is None, "transport": transport,
            "monitor_version": r["monitor_version"], "session_token": r["session_token"],
            "daemon_id": r["daemon_id"], "ipc_session_token": r["ipc_session_token"],
            "attached_at": r["attached_at"] or r["created_at"], "detached_at": detached,
            "last_heartbeat": r["last_heartbeat"], "last_claim_at": r["last_claim_at"],
            "last_reconciled_at": r["last_reconciled_at"], "created_at": r["created_at"]}
