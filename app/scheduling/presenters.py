"""Turn scheduling rows into the plain dicts the response schemas dump (wire §7.1, §8.1)."""

from __future__ import annotations

from typing import Any

from app.scheduling.models import Cue, Execution


def cue_dict(cue: Cue, warning: str | None = None) -> dict[str, Any]:
    """The wire cue object."""
    schedule: dict[str, Any] = {"type": cue.schedule_type, "timezone": cue.schedule_timezone}
    if cue.schedule_cron is not None:
        schedule["cron"] = cue.schedule_cron
    if cue.schedule_at is not None:
        schedule["at"] = cue.schedule_at
    return {
        "id": cue.id,
        "name": cue.name,
        "description": cue.description,
        "status": cue.status,
        "transport": cue.transport,
        "schedule": schedule,
        "callback": {"url": cue.callback_url, "method": cue.callback_method,
                     "headers": dict(cue.callback_headers or {})},
        "payload": cue.payload if cue.payload is not None else {},
        "retry": {"max_attempts": cue.retry_max_attempts,
                  "backoff_minutes": list(cue.retry_backoff_minutes)},
        "next_run": cue.next_run,
        "last_run": cue.last_run,
        "run_count": cue.run_count,
        "fired_count": cue.fired_count,
        "on_failure": cue.on_failure,
        "verification": {"mode": cue.verification_mode} if cue.verification_mode else None,
        "warning": warning,
        "created_at": cue.created_at,
        "updated_at": cue.updated_at,
    }


def execution_dict(execution: Execution) -> dict[str, Any]:
    """The wire execution object (13 fields; internal columns are not exposed)."""
    outcome = None
    if execution.outcome is not None:
        stored = execution.outcome
        outcome = {"success": stored.get("success"), "result": stored.get("result"),
                   "error": stored.get("error"), "metadata": stored.get("metadata"),
                   "recorded_at": _parse(stored.get("recorded_at"))}
    return {
        "id": str(execution.id),
        "cue_id": execution.cue_id,
        "scheduled_for": execution.scheduled_for,
        "status": execution.status,
        "http_status": execution.http_status,
        "attempts": execution.attempts,
        "error_message": execution.error_message,
        "started_at": execution.started_at,
        "delivered_at": execution.delivered_at,
        "last_attempt_at": execution.last_attempt_at,
        "outcome": outcome,
        "created_at": execution.created_at,
        "updated_at": execution.updated_at,
    }


def _parse(value):
    from datetime import datetime

    if value is None or not isinstance(value, str):
        return value
    return datetime.fromisoformat(value)
