"""Turn live-session rows into the plain dicts the response schemas dump (wire §11.2, §11.3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.agents_live.models import LiveSession


def _age(since: datetime | None, now: datetime) -> int | None:
    """Whole seconds from ``since`` to ``now`` (never negative), or None when never seen."""
    if since is None:
        return None
    return max(0, int((now - since).total_seconds()))


def live_session_dict(session: LiveSession, now: datetime) -> dict[str, Any]:
    """The wire ``LiveSession`` object."""
    return {
        "label": session.label,
        "cue_id": session.cue_id,
        "task_name": session.task_name,
        "is_default": session.is_default,
        "attached": session.detached_at is None,
        "heartbeat_age_sec": _age(session.last_heartbeat, now),
        "last_claim_at": session.last_claim_at,
        "last_claim_age_sec": _age(session.last_claim_at, now),
        "monitor_version": session.monitor_version,
        "attached_at": session.attached_at,
        "session_token": session.session_token,
    }


def attachment_dict(session: LiveSession, supersedes_token: str | None) -> dict[str, Any]:
    """The 201 body of an attach."""
    return {
        "id": str(session.id),
        "agent_id": session.agent_id,
        "label": session.label,
        "task_name": session.task_name,
        "transport": session.transport,
        "ipc_session_token": session.ipc_session_token,
        "daemon_id": str(session.daemon_id),
        "attached_at": session.attached_at,
        "last_reconciled_at": session.last_reconciled_at,
        "supersedes_token": supersedes_token,
    }
